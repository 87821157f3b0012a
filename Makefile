# make test   everything: set-up, unit tests, host-kernel tests, one guest boot per Debian kernel
# make setup  install what running and testing need (apt packages, guest kernels, .venv)
# make run    install what running needs, then start the dashboard on port 8080
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
PORT ?= 8080

.PHONY: test setup run

test:
	scripts/test.sh

setup:
	scripts/setup.sh

run:
	scripts/setup.sh --runtime
	$(SUDO) .venv/bin/ipft-web --port $(PORT)
