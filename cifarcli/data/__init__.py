"""Data: archive download and verification, the on-disk cache, the device loader and augmentation."""
