"""Small models written for the tests, each with the hazard it carries (see each docstring)."""
