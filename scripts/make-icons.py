#!/usr/bin/env python3
"""Draws the demo's item icons (assets/icons/*.png): simple shapes, drawn at 4x and scaled down
for smooth edges. Run it again after changing a shape; the PNGs are committed."""
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
SCALE = 4
OUT = Path(__file__).resolve().parent.parent / "assets" / "icons"


def canvas(background):
    image = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([0, 0, SIZE * SCALE - 1, SIZE * SCALE - 1], radius=14 * SCALE, fill=background)
    return image, draw


def s(*values):
    return [v * SCALE for v in values]


def save(image, name):
    image.resize((SIZE, SIZE), Image.LANCZOS).save(OUT / f"{name}.png")


def runner(name, body, trim):
    image, draw = canvas((38, 42, 56, 255))
    draw.ellipse(s(24, 8, 40, 24), fill=(250, 224, 196, 255))
    draw.rounded_rectangle(s(18, 24, 46, 50), radius=6 * SCALE, fill=body)
    draw.rectangle(s(18, 34, 46, 38), fill=trim)
    draw.rounded_rectangle(s(20, 48, 29, 58), radius=2 * SCALE, fill=(40, 40, 48, 255))
    draw.rounded_rectangle(s(35, 48, 44, 58), radius=2 * SCALE, fill=(40, 40, 48, 255))
    save(image, name)


def magnet():
    image, draw = canvas((36, 70, 64, 255))
    draw.arc(s(14, 10, 50, 46), start=180, end=360, fill=(220, 60, 60, 255), width=10 * SCALE)
    draw.rectangle(s(14, 27, 24, 46), fill=(220, 60, 60, 255))
    draw.rectangle(s(40, 27, 50, 46), fill=(220, 60, 60, 255))
    draw.rectangle(s(14, 44, 24, 54), fill=(225, 225, 235, 255))
    draw.rectangle(s(40, 44, 50, 54), fill=(225, 225, 235, 255))
    save(image, "magnet")


def shield():
    image, draw = canvas((30, 58, 80, 255))
    draw.polygon(s(32, 8, 52, 16, 50, 36, 32, 56, 14, 36, 12, 16), fill=(120, 200, 255, 255))
    draw.polygon(s(32, 14, 46, 20, 44, 35, 32, 49), fill=(80, 160, 230, 255))
    save(image, "shield")


def heart():
    image, draw = canvas((72, 30, 44, 255))
    draw.ellipse(s(12, 14, 34, 36), fill=(240, 80, 110, 255))
    draw.ellipse(s(30, 14, 52, 36), fill=(240, 80, 110, 255))
    draw.polygon(s(13, 29, 51, 29, 32, 54), fill=(240, 80, 110, 255))
    save(image, "extra_life")


def gems(name, count):
    image, draw = canvas((28, 48, 86, 255))
    spots = [(32, 34)] if count == 1 else [(22, 38), (42, 38), (32, 24)]
    size = 16 if count == 1 else 11
    for x, y in spots:
        draw.polygon(s(x, y - size, x + size, y - size // 3, x, y + size, x - size, y - size // 3), fill=(110, 200, 255, 255))
        draw.polygon(s(x, y - size, x + size, y - size // 3, x, y - size // 3), fill=(190, 235, 255, 255))
    save(image, name)


def turbo():
    image, draw = canvas((70, 56, 24, 255))
    draw.polygon(s(36, 6, 16, 36, 30, 36, 26, 58, 48, 26, 34, 26), fill=(255, 210, 60, 255))
    save(image, "turbo")


def bundle():
    image, draw = canvas((80, 50, 30, 255))
    draw.rectangle(s(12, 26, 52, 54), fill=(230, 150, 70, 255))
    draw.rectangle(s(10, 18, 54, 28), fill=(250, 180, 90, 255))
    draw.rectangle(s(29, 18, 35, 54), fill=(220, 60, 80, 255))
    draw.ellipse(s(20, 8, 32, 20), outline=(220, 60, 80, 255), width=3 * SCALE)
    draw.ellipse(s(32, 8, 44, 20), outline=(220, 60, 80, 255), width=3 * SCALE)
    save(image, "starter_bundle")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    runner("skin.red", (210, 50, 60, 255), (150, 30, 40, 255))
    runner("skin.blue", (60, 130, 230, 255), (30, 80, 170, 255))
    magnet()
    shield()
    heart()
    gems("gems.small", 1)
    gems("gems.large", 3)
    turbo()
    bundle()


if __name__ == "__main__":
    main()
