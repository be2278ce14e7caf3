# amid — a thin wrapper over meson + ninja.  `make run` serves; `make test` runs every test.
BUILD ?= build
ASAN ?= build-asan

.PHONY: all build asan test run deps format check-format clean

all: build

deps:
	@scripts/deps.sh build

build: deps
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) --buildtype=debugoptimized -Dwerror=true >/dev/null
	@ninja -C $(BUILD) >/dev/null

asan:
	@scripts/deps.sh all
	@[ -f $(ASAN)/build.ninja ] || meson setup $(ASAN) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true >/dev/null
	@ninja -C $(ASAN) >/dev/null

test: build asan
	@tests/run.sh

run: build
	@scripts/deps.sh run
	@scripts/run.sh

format:
	@clang-format -i $$(find src tests/unit tests/fuzz bench -name '*.[ch]' 2>/dev/null | grep -v '/model_')

check-format:
	@tools/check-format.sh

clean:
	rm -rf $(BUILD) $(ASAN)
