//! Binary-level tests: one test executable (compiles once) driving the real
//! `pflow` binary with `assert_cmd`, each test in its own temp `PFLOW_HOME`.

mod it;
