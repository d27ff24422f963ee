"""Custom code of the memwarp_cardiac_mri_registration MONAI bundle."""
