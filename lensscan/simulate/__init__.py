"""Mock survey generator: HSC-like g, r, i cutouts of strong lenses and hard non-lenses.

``simulate_survey`` writes shards; ``render_object`` draws one cutout with its truth.
"""

from lensscan.simulate.kinds import KINDS, NONLENS_KINDS, render_object
from lensscan.simulate.population import Population, SurveyConditions
from lensscan.simulate.survey import simulate_survey

__all__ = [
    "KINDS",
    "NONLENS_KINDS",
    "Population",
    "SurveyConditions",
    "render_object",
    "simulate_survey",
]
