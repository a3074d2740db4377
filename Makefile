# Flywheel's one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else the copy `make install` puts into the Python that runs make.
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PYTEST := $(UV) run --frozen pytest --durations=15
DEMO ?= 1
LOOP_ARGS ?=
FUZZ_INPUTS ?= 10000
OVERLAY ?= dev
SOURCES := libs/common libs/cli libs/sdk libs/testing services tests bench examples

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: ## Install uv if missing, sync the workspace from uv.lock, compile its bytecode
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	@# Bytecode compiled once here (the packages' and the workspace's own): a process started
	@# later reads it rather than compiling every module it imports, which costs a service
	@# 2-5 s and a CLI command 0.7 s where PYTHONDONTWRITEBYTECODE is set, as on our machines.
	@$(UV) sync --frozen --quiet --compile-bytecode
	@$(UV) run --frozen python -m compileall -q -j 0 libs services examples >/dev/null

.PHONY: run
run: install ## Start Kafka and the five services, then the demo loop (DEMO=0 skips it; Ctrl-C stops)
	@DEMO=$(DEMO) infra/run.sh

.PHONY: test
test: install ## Unit and integration tests against the real Kafka, PostgreSQL and Swift (S3)
	@infra/with-backends.sh $(PYTEST)

.PHONY: test-unit
test-unit: install ## Unit tests only (no broker, no database)
	@$(PYTEST) -m "not integration"

.PHONY: test-integration
test-integration: install ## Integration tests (starts Kafka, PostgreSQL and Swift if needed)
	@infra/with-backends.sh $(PYTEST) -m integration

.PHONY: test-chaos
test-chaos: install ## Chaos test: 2 replicas of every service, 3 brokers, PostgreSQL; kill -9 each (~5 min)
	@infra/with-backends.sh --kafka-cluster --no-swift $(PYTEST) tests/chaos -s

.PHONY: fuzz
fuzz: install ## Long fuzz run: 10,000+ inputs per service over real gRPC, then counts by status code (FUZZ_INPUTS=N)
	@infra/with-backends.sh --no-swift env FLYWHEEL_FUZZ_INPUTS=$(FUZZ_INPUTS) FLYWHEEL_FUZZ_REPORT=$(CURDIR)/.run/fuzz-report.json $(PYTEST) tests/fuzz -p no:cacheprovider

.PHONY: test-k8s
test-k8s: install ## Render infra/k8s's overlays and check them against Kubernetes' schemas (builds kustomize once)
	@$(PYTEST) tests/k8s

.PHONY: k8s-render
k8s-render: ## Print an overlay's manifests: make k8s-render OVERLAY=dev (prod: after infra/k8s/make-secrets.sh)
	@infra/k8s/kustomize.sh build infra/k8s/overlays/$(OVERLAY)

.PHONY: lint
lint: install ## ruff on all Python, mypy --strict on flywheel_common and the services
	@$(UV) run --frozen ruff check $(SOURCES)
	@$(UV) run --frozen ruff format --check $(SOURCES)
	@$(UV) run --frozen mypy -p flywheel_common -p flywheel_cli -p flywheel_sdk -p flywheel_testing -p flywheel_examples $(foreach s,$(notdir $(wildcard services/*)),-p flywheel_$(s))

.PHONY: audit
audit: install ## Known vulnerabilities in uv.lock (pip-audit; accepted ones in infra/audit/ignored.txt)
	@UV="$(UV)" infra/audit/run.sh

.PHONY: format
format: install ## Apply ruff's fixes and formatting
	@$(UV) run --frozen ruff format $(SOURCES)
	@$(UV) run --frozen ruff check --fix --exit-zero $(SOURCES)
	@$(UV) run --frozen ruff format $(SOURCES)

.PHONY: protos
protos: install ## Regenerate libs/protos from protos/
	@$(UV) run --frozen protos/generate.sh

.PHONY: protos-check
protos-check: install ## Fail when libs/protos is stale
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  $(UV) run --frozen protos/generate.sh $$tmp && \
	  diff -r --exclude=__pycache__ $$tmp libs/protos/src \
	  || { echo "libs/protos is stale: run 'make protos' and commit the result" >&2; exit 1; }

.PHONY: kafka-up
kafka-up: ## Start a single-node Kafka (KRaft) on 127.0.0.1:19092
	@infra/kafka/start.sh

.PHONY: kafka-cluster-up
kafka-cluster-up: ## Start a 3-broker Kafka cluster for fault tests
	@infra/kafka/start.sh --cluster

.PHONY: kafka-down
kafka-down: ## Stop the Kafka started by kafka-up or kafka-cluster-up
	@infra/kafka/stop.sh

.PHONY: kafka-sasl-up
kafka-sasl-up: ## Start Kafka with SASL_SSL and per-service ACLs on 127.0.0.1:19092 (credentials in .run/kafka-sasl-ssl/security)
	@infra/kafka/start.sh --sasl-ssl

.PHONY: kafka-sasl-down
kafka-sasl-down: ## Stop the Kafka started by kafka-sasl-up
	@infra/kafka/stop.sh --sasl-ssl

.PHONY: postgres-up
postgres-up: ## Start PostgreSQL on 127.0.0.1:15432
	@infra/postgres/start.sh

.PHONY: postgres-down
postgres-down: ## Stop that PostgreSQL
	@infra/postgres/stop.sh

.PHONY: swift-up
swift-up: ## Start OpenStack Swift with its S3 API on 127.0.0.1:18080 (bucket flywheel)
	@infra/swift/start.sh

.PHONY: swift-down
swift-down: ## Stop that Swift
	@infra/swift/stop.sh

.PHONY: bench
bench: bench-kafka bench-registry bench-gateway bench-served-call bench-prediction-logs bench-compression bench-rollout bench-drift bench-alarms bench-estimate bench-drift-replicas bench-takeover bench-loop bench-http-stack ## All benchmarks (never part of make test); record in bench/RESULTS.md

.PHONY: bench-kafka
bench-kafka: install ## Kafka bus: publisher and consumer against bare aiokafka
	@infra/with-backends.sh $(UV) run --frozen python bench/kafka_bus.py

.PHONY: bench-gateway
bench-gateway: install ## Gateway under tritonclient against in-process onnxruntime and a bare gRPC server
	@infra/with-backends.sh $(UV) run --frozen python bench/gateway.py

.PHONY: bench-served-call
bench-served-call: install ## A served gRPC call: fixed reply against a suspension, a model run on the loop or in a thread, Flywheel's server
	@$(UV) run --frozen python bench/served_call.py --repeat 3

.PHONY: bench-prediction-logs
bench-prediction-logs: install ## What logging a prediction costs the gateway's event loop, on against off
	@infra/with-backends.sh $(UV) run --frozen python bench/prediction_logs.py

.PHONY: bench-compression
bench-compression: install ## Kafka compression of prediction-log records: CPU per log and ratio of each codec beside lz4's
	@$(UV) run --frozen python bench/compression.py

.PHONY: bench-rollout
bench-rollout: install ## Rollback decision to the last of 3 gateways at 0%, beside Kafka latency
	@infra/with-backends.sh $(UV) run --frozen python bench/rollout.py

.PHONY: bench-http-stack
bench-http-stack: install ## HTTP stack for the V2 REST endpoint: aiohttp.web beside uvicorn (Starlette, FastAPI, bare ASGI) and granian (~4 min)
	@$(UV) run --frozen python bench/http_stack.py

.PHONY: bench-takeover
bench-takeover: install ## Leader-lease takeover after kill -9 beside Kafka's group rebalance, 20 kills
	@infra/with-backends.sh $(UV) run --frozen python bench/takeover.py

.PHONY: bench-drift
bench-drift: install ## Drift detector events/s from Kafka; per-window time beside Evidently and alibi-detect
	@infra/with-backends.sh $(UV) run --frozen python bench/drift.py

.PHONY: bench-alarms
bench-alarms: install ## Drift alarm policies: false alarms per 1,000 clean windows and detection delay
	@$(UV) run --frozen python bench/alarms.py

.PHONY: bench-estimate
bench-estimate: install ## Drift: accuracy estimated before labels (CBPE) against the accuracy labels later show
	@$(UV) run --frozen python bench/estimate.py

.PHONY: bench-drift-replicas
bench-drift-replicas: install ## Drift detector, 1 vs 2 replicas over 4 partitions; the pause when one dies or joins
	@infra/with-backends.sh $(UV) run --frozen python bench/drift_replicas.py

.PHONY: bench-loop
bench-loop: install ## The whole loop on river's drift streams beside static, scheduled, oracle and ARF (LOOP_ARGS="--requests 20000")
	@infra/with-backends.sh --no-swift $(UV) run --frozen python bench/loop_quality.py $(LOOP_ARGS)

.PHONY: bench-registry
bench-registry: install ## Registry: registrations, GetArtifact MB/s, ListModelVersions at 10k
	@infra/with-backends.sh $(UV) run --frozen python bench/registry.py

.PHONY: bench-gpu
bench-gpu: ## The gateway on an NVIDIA GPU (bench/gpu.sh): the gpu extra, a CUDA check, bench-gateway on CUDA (~5 min); without a GPU it says so
	@bench/gpu.sh

.PHONY: clean
clean: ## Stop backends and remove runtime state (.run)
	-@infra/kafka/stop.sh --clean
	-@infra/postgres/stop.sh
	-@infra/swift/stop.sh --clean
	rm -rf .run
