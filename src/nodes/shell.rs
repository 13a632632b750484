//! `shell`: runs a command with `sh -c`, captures stdout, stderr and the exit
//! code. The child is killed when the node times out or the run is
//! interrupted (no orphaned processes). Its CPU time and peak RSS go on the
//! node span: pflow reaps `sh` itself with `wait4`, whose rusage tokio's
//! child handle would discard.

use super::{specs, Node, NodeContext, NodeError, NodeFuture, NodeOutput, NodeSpec, Params};
use crate::telemetry::resources::Usage;
use serde_json::{json, Map, Value};
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Shell;

const DEFAULT_TIMEOUT_S: f64 = 600.0;

impl Node for Shell {
    fn spec(&self) -> &'static NodeSpec {
        &specs::SHELL
    }

    fn run<'a>(&'a self, _ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let command = params.str("command")?;
            let timeout = params.f64_opt("timeout")?.unwrap_or(DEFAULT_TIMEOUT_S);
            if !(timeout > 0.0 && timeout.is_finite()) {
                return Err(NodeError::param(
                    "timeout",
                    "must be a positive number of seconds",
                ));
            }
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c").arg(command);
            // Own process group, so a timeout or an interrupt can kill the
            // command's children too (`sh -c "a | b"`), not only `sh` (the
            // group killer below stands in for tokio's kill_on_drop).
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            // Its own group also shields the command from pflow's death: if pflow
            // is SIGKILLed, nothing would kill the group. On Linux it dies too.
            #[cfg(target_os = "linux")]
            orphans::die_with_pflow(&mut cmd);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            if let Some(cwd) = params.str_opt("cwd")? {
                cmd.current_dir(cwd);
            }
            if let Some(env) = params.object_opt("env")? {
                for (k, v) in env {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    // pflow knows this is a secret: its value is scrubbed from the command's
                    // output, errors and traces too, not only from the param preview.
                    if crate::telemetry::redact::is_secret_env_var(k) {
                        crate::telemetry::redact::add_secret(&v);
                    }
                    cmd.env(k, v);
                }
            }
            // The command joins the run's trace (W3C TRACEPARENT/TRACESTATE), unless the workflow set them.
            for (k, v) in crate::telemetry::current_trace_context() {
                let name = k.to_ascii_uppercase();
                if params
                    .object_opt("env")?
                    .is_none_or(|e| !e.contains_key(&name))
                {
                    cmd.env(name, v);
                }
            }
            let stdin = params.text_opt("stdin");
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
            let inherited = crate::telemetry::resources::resident_bytes();
            let mut child = cmd.spawn().map_err(|e| {
                NodeError::new(
                    "spawn_error",
                    format!("cannot start `sh -c {command}`: {e}"),
                )
            })?;
            let mut group = GroupKiller(Some(child.id()));
            let (stdout, stderr, stdin_pipe) =
                (child.stdout.take(), child.stderr.take(), child.stdin.take());
            // `child` is only a pid from here on: std's handle neither kills nor
            // reaps on drop, and the blocking reaper is the one waiter.
            let reaper = reap(child);
            let io_error = |e: std::io::Error| {
                NodeError::new("io_error", format!("command `{command}` failed: {e}"))
            };
            let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
                return Err(NodeError::new(
                    "io_error",
                    "the command's output pipes are missing",
                ));
            };
            let mut stdout = tokio::process::ChildStdout::from_std(stdout).map_err(io_error)?;
            let mut stderr = tokio::process::ChildStderr::from_std(stderr).map_err(io_error)?;
            if let (Some(text), Some(pipe)) = (stdin, stdin_pipe) {
                let mut pipe = tokio::process::ChildStdin::from_std(pipe).map_err(io_error)?;
                // Feed stdin concurrently so a command that writes before reading cannot deadlock.
                tokio::spawn(async move {
                    let _ = pipe.write_all(text.as_bytes()).await;
                });
            }
            let collect = async {
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let (o, e) =
                    tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
                o.and(e)?;
                let (status, usage) = reaper.await.map_err(std::io::Error::other)??;
                Ok::<_, std::io::Error>((out, err, status, usage))
            };
            let (stdout, stderr, status, usage) = match tokio::time::timeout(
                crate::limits::secs(timeout, crate::limits::MAX_TIMEOUT),
                collect,
            )
            .await
            {
                Ok(r) => r.map_err(io_error)?,
                Err(_) => {
                    return Err(NodeError::new(
                        "timeout",
                        format!("command timed out after {timeout}s and was killed: `{command}`"),
                    ));
                }
            };
            group.0 = None;
            if let Some(u) = usage {
                crate::telemetry::resources::record_child(&tracing::Span::current(), &u, inherited);
            }
            let exit_code = status.code().unwrap_or(-1);
            let mut outputs = Map::new();
            outputs.insert("stdout".into(), json!(String::from_utf8_lossy(&stdout)));
            outputs.insert("stderr".into(), json!(String::from_utf8_lossy(&stderr)));
            outputs.insert("exit_code".into(), json!(exit_code));
            if exit_code != 0 && !params.bool_or("ignore_errors", false)? {
                let stderr_tail: String = String::from_utf8_lossy(&stderr)
                    .chars()
                    .rev()
                    .take(500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let mut msg = format!("command exited with status {exit_code}: `{command}`");
                if !stderr_tail.trim().is_empty() {
                    msg.push_str(&format!("; stderr: {}", stderr_tail.trim()));
                }
                return Err(NodeError::new("exit_status", msg).with_details(Value::Object(outputs)));
            }
            Ok(NodeOutput::new(outputs))
        })
    }
}

type Reaped = std::io::Result<(std::process::ExitStatus, Option<Usage>)>;

/// Waits for `sh` on a blocking thread and reaps it with `wait4`, keeping its
/// rusage: `sh`'s own plus that of every descendant it waited for (a
/// pipeline's stages, a command it ran). A timeout or cancellation kills the
/// group (see [`GroupKiller`]), so the wait always ends.
#[cfg(unix)]
fn reap(child: std::process::Child) -> tokio::task::JoinHandle<Reaped> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::process::ExitStatusExt;
        let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain integers, for which all-zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `status` and `ru` are live and writable; `pid` is this
            // node's own child, not yet reaped (nothing else waits for it:
            // std's handle does not), so wait4 waits for exactly that process.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        drop(child);
        Ok((
            std::process::ExitStatus::from_raw(status),
            Some(Usage::from_rusage(&ru)),
        ))
    })
}

#[cfg(not(unix))]
fn reap(mut child: std::process::Child) -> tokio::task::JoinHandle<Reaped> {
    tokio::task::spawn_blocking(move || Ok((child.wait()?, None)))
}

/// Kills the command's whole process group when dropped armed (timeout,
/// cancellation, interrupt); disarmed once the command has exited.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.take() {
            if let Ok(pgid) = libc::pid_t::try_from(pid) {
                // SAFETY: killpg only sends a signal; a stale group id fails with ESRCH.
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Shell commands die with pflow, even SIGKILLed (Linux): `PR_SET_PDEATHSIG`
/// kills the `sh` itself, and a watcher forked into the command's process
/// group kills the whole group (`sh -c "a | b"`, and dash forks even a lone
/// command) when pflow's end of a pipe closes. The watcher leaves within a
/// second of the command's end.
#[cfg(target_os = "linux")]
mod orphans {
    use std::os::fd::RawFd;
    use std::sync::OnceLock;

    /// Read end and write end of the pipe whose write end only pflow holds
    /// (close-on-exec: no command inherits it).
    fn pipe() -> Option<(RawFd, RawFd)> {
        static PIPE: OnceLock<Option<(RawFd, RawFd)>> = OnceLock::new();
        *PIPE.get_or_init(|| {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: pipe2 writes two descriptors into the array it is given.
            let ok = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0;
            ok.then_some((fds[0], fds[1]))
        })
    }

    pub fn die_with_pflow(cmd: &mut std::process::Command) {
        let parent = std::process::id() as libc::pid_t;
        let pipe = pipe();
        // SAFETY: between fork and exec only async-signal-safe calls are made
        // (prctl, getpid, getppid, fork, close, syscall, poll, kill, _exit);
        // nothing is allocated or locked.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // pflow died before prctl took effect: do not run orphaned.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                if let Some((read, _)) = pipe {
                    let group = libc::getpid();
                    if libc::fork() == 0 {
                        watch(read, group);
                    }
                }
                Ok(())
            });
        }
    }

    /// The watcher: holds no pipe of the command's (so its output still ends),
    /// waits for pflow's write end to close, then kills the group.
    unsafe fn watch(read: RawFd, group: libc::pid_t) -> ! {
        close_all_but(read);
        loop {
            let mut p = libc::pollfd {
                fd: read,
                events: libc::POLLIN,
                revents: 0,
            };
            // Nothing is ever written: readable or hung up means pflow is gone.
            if libc::poll(&mut p, 1, 1000) > 0 && p.revents != 0 {
                libc::kill(-group, libc::SIGKILL);
                libc::_exit(0);
            }
            if libc::getppid() != group {
                // The command has ended: nothing left to guard.
                libc::_exit(0);
            }
        }
    }

    /// Closes every descriptor but `keep` (the command's pipes, pflow's write end).
    unsafe fn close_all_but(keep: RawFd) {
        let close_range = |lo: libc::c_uint, hi: libc::c_uint| {
            libc::syscall(libc::SYS_close_range, lo, hi, 0 as libc::c_uint) == 0
        };
        let k = keep as libc::c_uint;
        let below = k == 0 || close_range(0, k - 1);
        if !(below && close_range(k + 1, libc::c_uint::MAX)) {
            for fd in (0..4096).filter(|fd| *fd != keep) {
                libc::close(fd);
            }
        }
    }
}
