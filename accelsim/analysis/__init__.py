"""What users do with results: reports (DataFrames), inspect, sweeps, plots."""
