"""VM and cloud images: the Debian base and disk, the accelerator probe, Packer and the pyinfra deploy."""
