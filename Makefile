# The two Quickstart commands: `make demo` and `make test`.
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/em-spark demo

test: setup
	bash scripts/test.sh
