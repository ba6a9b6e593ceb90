"""The command line: `python -m harness run|map|serve|report|reference` (and the Makefile's
targets, which pass their variables as these flags). All user input is validated here."""
