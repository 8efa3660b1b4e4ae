"""What stages hand each other, typed: paths, atomic writes, the checkpoint format, the records (cell metrics and
tuned recipe in records.py; the bench's and the probes' own records beside it) and the code identity of a stage."""
