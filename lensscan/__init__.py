"""lensscan: find strong gravitational lenses in survey cutouts with CNN ensembles on Ray."""

__version__ = "0.1.0"
