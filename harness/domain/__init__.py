"""The domain: what a benchmark is (axes, cells, results, plans, rules). Standard library only,
plus the standard-library vocabularies of app/styles.py and servers/registry.py."""
