"""One-off checks behind figures in the docs, with the files they wrote."""
