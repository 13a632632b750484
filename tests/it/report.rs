//! `pflow trace report`: the HTML file from a saved trace, its CLI contract
//! (default name, JSON answer, exit codes), and — where Debian's `chromium`
//! is installed (CI installs it) — the page in real headless Chromium: the
//! script drew one row per span, the bars are on screen in their colours with
//! parallel batch items overlapping, `#span=ID` opens a span's details, and
//! prompt text that looks like markup stays text.

use super::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const REVIEW: &str = "20261201T190339.377Z_e4dc5f3657d643f701f02e0e78d8b794.otlp.json";
const FAILED: &str = "20261201T190340.170Z_5669f73d606dd4bca4919a226c9aacc3.otlp.json";
/// The `chat gpt-4o` span of the `ask` node in REVIEW.
const ASK_LLM_SPAN: &str = "fb8d41ef9b7ef44c";
const CHROMIUM: &str = "/usr/bin/chromium";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/traces")
        .join(name)
}

fn env_with_fixtures() -> Env {
    let env = Env::new();
    std::fs::create_dir_all(env.traces_dir()).unwrap();
    for f in [REVIEW, FAILED] {
        std::fs::copy(fixture(f), env.traces_dir().join(f)).unwrap();
    }
    env
}

fn out_of(cmd: &mut assert_cmd::Command) -> (String, String, i32) {
    let out = cmd.output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Runs Chromium headless on `url`; a hung browser is killed (not a timing
/// assertion: only a guard so the suite cannot hang).
fn chromium(profile: &Path, extra: &[&str], url: &str) -> Output {
    let child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    // The output is read while the browser runs: a dumped DOM larger than
    // the pipe's buffer would otherwise block the browser and hang here.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("chromium did not finish on {url}");
        }
    }
}

fn file_url(p: &Path, hash: &str) -> String {
    format!("file://{}{hash}", p.canonicalize().unwrap().display())
}

/// The inside of `<aside id="details" …>…</aside>` in a dumped DOM.
fn details_of(dom: &str) -> &str {
    let a = dom.find("<aside id=\"details\"").expect("details panel");
    let b = a + dom[a..].find("</aside>").expect("details end");
    &dom[a..b]
}

#[test]
fn report_of_a_saved_run_by_id() {
    let env = env_with_fixtures();
    let out = env.dir.path().join("run.html");
    let (stdout, stderr, code) = out_of(env.pflow().args([
        "--output-format",
        "json",
        "trace",
        "report",
        "e4dc5f36",
        "-o",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["report"], out.display().to_string());
    assert_eq!(v["trace_id"], "e4dc5f3657d643f701f02e0e78d8b794");
    assert_eq!(v["spans"], 13);
    assert!(stderr.contains("run.html"), "{stderr}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<h1>review-notes</h1>"));
    assert!(html.contains("Cost and tokens by node"));
}

#[test]
fn report_defaults_to_last_and_the_trace_name() {
    let env = env_with_fixtures();
    let (_, stderr, code) = out_of(env.pflow().args(["trace", "report"]));
    assert_eq!(code, 0, "{stderr}");
    let want = env.dir.path().join(FAILED.replace(".otlp.json", ".html"));
    let html = std::fs::read_to_string(&want).expect("report in the current directory");
    assert!(html.contains("<h1>deploy-check</h1>"));
    assert!(html.contains("✗ failed"));
    assert!(
        stderr.contains(&FAILED.replace(".otlp.json", ".html")),
        "{stderr}"
    );
}

#[test]
fn report_errors_name_what_is_wrong() {
    let env = env_with_fixtures();
    let (_, stderr, code) = out_of(env.pflow().args(["trace", "report", "ffff0000"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ffff0000"), "{stderr}");
    let bad = env.dir.path().join("no/such/dir/run.html");
    let (_, stderr, code) =
        out_of(
            env.pflow()
                .args(["trace", "report", "last", "--output", bad.to_str().unwrap()]),
        );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot write the report") && stderr.contains("no/such/dir/run.html"),
        "{stderr}"
    );
}

/// Bands of rows holding `rgb` (only bands at least `min_h` tall: bars are
/// 14 px, legend swatches 9 px), each as (y0, y1, x0, x1).
fn bands(img: &(u32, u32, Vec<u8>), rgb: [u8; 3], min_h: u32) -> Vec<(u32, u32, u32, u32)> {
    let (w, h, px) = img;
    let row_span = |y: u32| {
        let xs: Vec<u32> = (0..*w)
            .filter(|x| {
                let i = ((y * w + x) * 4) as usize;
                px[i..i + 3] == rgb
            })
            .collect();
        xs.first().map(|a| (*a, *xs.last().unwrap()))
    };
    let mut out = Vec::new();
    let mut cur: Option<(u32, u32, u32, u32)> = None;
    for y in 0..*h {
        match (row_span(y), cur) {
            (Some((a, b)), None) => cur = Some((y, y, a, b)),
            (Some((a, b)), Some((y0, _, x0, x1))) => cur = Some((y0, y, x0.min(a), x1.max(b))),
            (None, Some(c)) => {
                out.push(c);
                cur = None;
            }
            (None, None) => {}
        }
    }
    out.extend(cur);
    out.retain(|(y0, y1, _, _)| y1 - y0 + 1 >= min_h);
    out
}

fn decode_png(p: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let px = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks(3)
            .flat_map(|c| [c[0], c[1], c[2], 255])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, px)
}

#[test]
fn report_renders_in_headless_chromium() {
    if !tool_present(Path::new(CHROMIUM).exists(), CHROMIUM) {
        return;
    }
    let env = env_with_fixtures();
    let report = env.dir.path().join("review.html");
    let (_, stderr, code) = out_of(
        env.pflow().args([
            "trace",
            "report",
            REVIEW
                .split('_')
                .nth(1)
                .unwrap()
                .trim_end_matches(".otlp.json"),
            "-o",
            report.to_str().unwrap(),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");

    // The script ran: one row per span, and the page marked itself drawn.
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(profile.path(), &["--dump-dom"], &file_url(&report, ""));
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("data-rendered=\"true\""), "{dom}");
    let rows = dom.matches("<div class=\"row ").count();
    assert_eq!(rows, 13, "one waterfall row per span");
    assert!(!details_of(&dom).contains("What is the weather"));

    // `#span=ID` opens that span's details: its prompt and response.
    let dom = chromium(
        profile.path(),
        &["--dump-dom"],
        &file_url(&report, &format!("#span={ASK_LLM_SPAN}")),
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let details = details_of(&dom);
    assert!(details.contains("What is the weather in SF?"), "{details}");
    assert!(
        details.contains("I'm unable to provide real-time weather"),
        "{details}"
    );
    assert!(details.contains("gpt-4o-2024-08-06"), "{details}");
    assert!(
        // The call is on the critical path too: the `ask` node set most of the run's time.
        dom.contains("row k-row-llm critical selected"),
        "the row is highlighted"
    );

    // The screenshot shows the bars, each kind in its colour, and the
    // parallel batch items overlapping in time.
    let shot = env.dir.path().join("shot.png");
    let out = chromium(
        profile.path(),
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", shot.display()),
        ],
        &file_url(&report, ""),
    );
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = decode_png(&shot);
    let node = bands(&img, [0x2f, 0x80, 0xed], 12);
    let item = bands(&img, [0x9b, 0x51, 0xe0], 12);
    let llm = bands(&img, [0xf2, 0x99, 0x4a], 12);
    let failed = bands(&img, [0xeb, 0x57, 0x57], 12);
    let workflow = bands(&img, [0x4f, 0x5d, 0x75], 12);
    assert!(node.len() >= 5, "node bars: {node:?}");
    assert_eq!(item.len(), 3, "batch item bars: {item:?}");
    assert_eq!(llm.len(), 2, "LLM bars: {llm:?}");
    assert_eq!(failed.len(), 1, "failed bars: {failed:?}");
    assert_eq!(workflow.len(), 2, "workflow bars: {workflow:?}");
    // Items in rows below each other whose x ranges intersect: side by side in time.
    let overlapping = item
        .windows(2)
        .any(|w| w[1].0 > w[0].1 && w[1].2 <= w[0].3 && w[0].2 <= w[1].3);
    assert!(overlapping, "batch items do not overlap: {item:?}");
    // Every bar sits inside the run's bar horizontally.
    let run = workflow[0];
    for b in node.iter().chain(&item).chain(&llm).chain(&failed) {
        assert!(b.2 >= run.2 && b.3 <= run.3 + 1, "{b:?} outside {run:?}");
    }
}

#[test]
fn markup_in_a_prompt_stays_text_in_chromium() {
    if !tool_present(Path::new(CHROMIUM).exists(), CHROMIUM) {
        return;
    }
    let env = Env::new();
    let evil = "</script><img src=x onerror=alert(1)><b>bold</b>";
    let text = std::fs::read_to_string(fixture(REVIEW))
        .unwrap()
        .replace("What is the weather in SF?", evil);
    let trace = env.write("evil.otlp.json", &text);
    let report = env.dir.path().join("evil.html");
    let (_, stderr, code) = out_of(env.pflow().args([
        "trace",
        "report",
        trace.to_str().unwrap(),
        "-o",
        report.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(
        profile.path(),
        &["--dump-dom"],
        &file_url(&report, &format!("#span={ASK_LLM_SPAN}")),
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("data-rendered=\"true\""), "the page still ran");
    assert!(!dom.contains("<img"), "markup became an element");
    assert!(!dom.contains("<b>bold"), "markup became an element");
    assert!(
        details_of(&dom).contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold"),
        "{}",
        details_of(&dom)
    );
}
