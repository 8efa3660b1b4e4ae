"""What stages hand each other, typed: paths, atomic writes, the checkpoint format, the records (cell metrics, bench
result, probe result, tuned recipe) and the code identity of a stage."""
