"""What every family of a kind shares: the Task contract, detection and segmentation parts, drawing."""
