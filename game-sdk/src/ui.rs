//! The storefront window (feature `egui`).
