"""Reports: tables, charts and the reference page, generated from a run directory's raw records
only. Reports read the store; they never call back into the code that measures."""
