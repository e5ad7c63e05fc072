"""Verifies a Coinslot receipt's JWS with PyJWT, a JOSE implementation independent of Coinslot.

Usage: verify_receipt.py <JWK Set URL> <compact JWS>

Fetches the key set, picks the key the JWS names (`kid`), checks the `EdDSA` signature and the
explicit type, and prints the payload as JSON. Exits 1 with the library's error otherwise.
"""

import json
import sys

import jwt


def main() -> int:
    jwks_url, token = sys.argv[1], sys.argv[2]
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "coinslot-receipt+jwt":
            raise jwt.InvalidTokenError(f"not a receipt: typ {header.get('typ')!r}")
        key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
        payload = jwt.decode(token, key.key, algorithms=["EdDSA"])
    except jwt.PyJWTError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
