"""Reading and writing what accelsim consumes: traces, hardware configs, YAML, synthetic traces."""
