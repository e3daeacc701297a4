"""The pure core, no I/O: errors, sizes, limits, the accounting model and its rules, policy, records, names."""
