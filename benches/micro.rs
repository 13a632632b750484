//! Micro-benchmarks of the per-call costs: one span through the whole
//! telemetry pipeline (tracing → tracing-opentelemetry → metrics processor →
//! trace-file processor, encoded on the writer thread), template resolution,
//! pricing lookup and cost, usage extraction from real provider bodies, and
//! the redactor on text with and without credentials (µs per KB scanned),
//! and the o200k tokenizer: its first count in the process (the echo
//! model's first call: nothing to load) and a count of ~1 KB of text.
//!
//! `cargo bench --bench micro -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pflow::ir::template::Template;
use pflow::llm::usage;
use pflow::pricing::{cost, PriceTable, TokenCounts};
use pflow::runtime::template::{resolve_template, CompiledValue, Scope};
use pflow::telemetry::{Telemetry, TelemetryConfig, TraceMode};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn spans(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("span_pipeline");
    for (name, mode, live) in [
        ("metrics_only", TraceMode::MetricsOnly, false),
        // Kept only on failure: encoded to memory (spilled past 8 MiB), then dropped.
        ("full_trace", TraceMode::Full { save_always: false }, false),
        // `--live`: each span also becomes a feed event, read by one consumer
        // (as the terminal lines read it); the difference to `full_trace` is its cost.
        (
            "full_trace_live",
            TraceMode::Full { save_always: false },
            true,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let feed = live.then(pflow::telemetry::live::LiveFeed::new);
                let reader = feed.as_ref().map(|f| {
                    let mut sub = f.subscribe();
                    std::thread::spawn(move || while sub.blocking_next().is_some() {})
                });
                let telemetry = Telemetry::init(TelemetryConfig {
                    mode,
                    trace_dir: dir.path().to_path_buf(),
                    service_name: "pflow-bench".into(),
                    otlp: None,
                    resource_attributes: Vec::new(),
                    progress: None,
                    live: feed.clone(),
                });
                let start = Instant::now();
                tracing::dispatcher::with_default(&telemetry.dispatch(), || {
                    let root =
                        tracing::info_span!("workflow bench", "pflow.workflow.name" = "bench");
                    let _g = root.enter();
                    for i in 0..iters {
                        let s = tracing::info_span!(
                            "node n",
                            "pflow.node.id" = "n",
                            "pflow.node.type" = "echo",
                            "pflow.node.path" = "n",
                            "pflow.node.attempt" = 1i64,
                            "pflow.node.status" = "ok",
                        );
                        let _e = s.enter();
                        tracing::debug!(
                            pflow.store.key = "n.value",
                            pflow.value.size = i as i64,
                            "pflow.store.write"
                        );
                    }
                });
                // Includes the writer draining and encoding every span.
                let _ = telemetry.finish(false, "bench");
                let elapsed = start.elapsed();
                if let (Some(f), Some(r)) = (feed, reader) {
                    f.end(pflow::telemetry::live::RunEnd {
                        status: "ok".into(),
                        exit_code: 0,
                        trace_id: None,
                        trace_file: None,
                        duration_ms: 0.0,
                        llm_calls: 0,
                        tokens_total: 0,
                        cost_usd: None,
                        cost_lower_bound_usd: 0.0,
                        metrics: None,
                    });
                    let _ = r.join();
                }
                elapsed
            })
        });
    }
    g.finish();
}

fn templates(c: &mut Criterion) {
    let mut store = Map::new();
    store.insert(
        "a".into(),
        json!({"value": 41, "text": "hello world", "items": [1, 2, 3]}),
    );
    let scope = Scope {
        store: &store,
        locals: &[],
    };
    let single = Template::parse("${a.value}").expect("template");
    let mixed = Template::parse("got ${a.text} and ${a.items[1]} (${a.value})").expect("template");
    let params =
        CompiledValue::compile(&json!({"x": "${a.text}", "n": 3, "list": ["${a.value}", "lit"]}))
            .expect("compiles");
    let mut g = c.benchmark_group("template");
    g.bench_function("parse", |b| {
        b.iter(|| Template::parse(black_box("got ${a.text} and ${a.items[1]} (${a.value})")))
    });
    g.bench_function("resolve_single_ref", |b| {
        b.iter(|| resolve_template(black_box(&single), &scope))
    });
    g.bench_function("resolve_mixed_string", |b| {
        b.iter(|| resolve_template(black_box(&mixed), &scope))
    });
    g.bench_function("resolve_params_object", |b| {
        b.iter(|| params.resolve(&scope, &mut |_, _| {}))
    });
    g.finish();
}

fn pricing(c: &mut Criterion) {
    let table = PriceTable::builtin();
    let counts = TokenCounts {
        input: 12_000,
        output: 800,
        cache_read: 4_000,
        cache_write: 1_000,
        cache_write_1h: 0,
        reasoning: 200,
        ..Default::default()
    };
    let price = table
        .lookup("claude-sonnet-4-5", Some("anthropic"))
        .expect("priced")
        .price;
    let mut g = c.benchmark_group("pricing");
    g.bench_function("lookup_exact", |b| {
        b.iter(|| table.lookup(black_box("gpt-4o-mini"), Some("openai")))
    });
    g.bench_function("lookup_dated_prefixed", |b| {
        b.iter(|| table.lookup(black_box("openai/gpt-4o-mini-2024-07-18"), None))
    });
    g.bench_function("lookup_unknown", |b| {
        b.iter(|| table.lookup(black_box("no-such-model"), None))
    });
    g.bench_function("cost", |b| b.iter(|| cost(black_box(&counts), &price)));
    g.finish();
}

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/llm/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn usage_extraction(c: &mut Criterion) {
    // Each case parses the real response body and extracts its usage, as the provider code does.
    type Extract = fn(&Value) -> usage::Parsed;
    let cases: [(&str, &str, Extract); 5] = [
        ("openai_chat", "openai-chat-cache-read.json", |v| {
            usage::from_openai_chat(&v["usage"])
        }),
        (
            "openai_responses",
            "openai-responses-cached-reasoning.json",
            |v| usage::from_openai_responses(&v["usage"]),
        ),
        ("anthropic", "anthropic-messages-cache.json", |v| {
            usage::from_anthropic(&v["usage"])
        }),
        ("gemini", "gemini-generate-content-cached.json", |v| {
            usage::from_gemini(&v["usageMetadata"])
        }),
        ("ollama", "ollama-chat.json", usage::from_ollama),
    ];
    let mut g = c.benchmark_group("usage_extraction");
    for (name, file, extract) in cases {
        let body = fixture(file);
        let parsed: Value = serde_json::from_str(&body).expect("fixture is JSON");
        assert!(
            extract(&parsed).is_ok_and(|u| u.is_known()),
            "{file}: usage found"
        );
        g.bench_function(format!("{name}_parse_and_extract"), |b| {
            b.iter(|| {
                let v: Value = serde_json::from_str(black_box(&body)).expect("json");
                extract(&v)
            })
        });
        g.bench_function(format!("{name}_extract_only"), |b| {
            b.iter(|| extract(black_box(&parsed)))
        });
    }
    g.finish();
}

/// Text as the redactor meets it: prose, a JSON params preview, shell output
/// (1 KiB each), plain and with credentials in it.
fn redaction(c: &mut Criterion) {
    use pflow::telemetry::redact::Redactor;
    let r = Redactor::new(vec!["an-env-secret-value-1234".into()]);
    let fill = |seed: &str| -> String {
        let mut s = String::new();
        while s.len() < 1024 {
            s.push_str(seed);
        }
        s.truncate(1024);
        s
    };
    let prose = fill("The quarterly report shows revenue grew 12% while costs held flat; the team shipped three features and closed 41 issues. ");
    let json = fill(
        r#"{"command": "git log --oneline -n 20", "cwd": "/home/user/projects/app", "timeout": 30, "env": {"LANG": "C"}, "max_tokens": 300}, "#,
    );
    let shell = fill("drwxr-xr-x  5 user staff  160 Dec  1 10:02 src\n-rw-r--r--  1 user staff 4096 Dec  1 10:02 Cargo.toml 3f786850e387550fdab836ed7e6dc881de23001b\n");
    let secrets = fill("deploy with ghp_abcdefghijklmnopqrstuvwxyz0123456789 to postgres://admin:hunter2pw@db:5432/x password=swordfish99 and sk_live_abcdefghijklmnopqrstuvwx; ");
    let mut g = c.benchmark_group("redact_1kib");
    g.throughput(criterion::Throughput::Bytes(1024));
    for (name, text) in [
        ("prose", &prose),
        ("json", &json),
        ("shell_output", &shell),
        ("with_secrets", &secrets),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(r.redact_str(black_box(text))))
        });
    }
    g.finish();
}

fn tokenizer(c: &mut Criterion) {
    // The first count of the process, once: what the echo model's first call pays.
    let t = Instant::now();
    let n = pflow::llm::count_tokens("Summarise these notes in one line.");
    eprintln!(
        "tokenizer: first count in this process {:.1} µs ({n:?} tokens)",
        t.elapsed().as_secs_f64() * 1e6
    );
    let text =
        "The quick brown fox jumps over the lazy dog; Ünïcödé — 日本語 🚀 123456. ".repeat(14);
    c.bench_function("tokenizer/count_1kb", |b| {
        b.iter(|| pflow::llm::count_tokens(black_box(&text)))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = tokenizer, spans, templates, pricing, usage_extraction, redaction }
criterion_main!(benches);
