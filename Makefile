# payflow: the two commands first (see README.md).
#   make demo   bring everything up and pay the seed's scenarios
#   make test   bring everything up and run the whole test suite
#   make down   stop what they started
#   make chaos  the fault suite at full size (writes RELIABILITY.md)

export CARGO_TARGET_DIR ?= $(HOME)/.cache/payflow/target

.PHONY: demo test down bench up chaos

demo:
	scripts/demo.sh

test:
	scripts/test.sh

down:
	scripts/down.sh

up:
	scripts/up.sh

bench:
	scripts/bench.sh

chaos:
	scripts/chaos.sh
