"""`python -m train`: fit the seed CNN (see __main__.py), score it, write and publish a weights folder."""
