"""From raw cutouts to model inputs: preprocessing, augmentation and Ray Data streams."""
