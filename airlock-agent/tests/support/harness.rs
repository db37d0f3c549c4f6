//! The kernel suites' test runner (libtest-mimic, `harness = false`): each
//! suite lists its tests in `kernel_tests!`. A suite needs root; for a normal
//! user every test is reported as ignored with the reason, never as passed,
//! and a test that cannot check something in this environment calls [`skip`]
//! and is reported as ignored with its reason too. A test that checks some of
//! its cases and cannot check others calls [`skip_part`] for each of those: it
//! goes on, and if it passes it is reported as ignored with those reasons, so
//! that the part it could not check never counts as passed.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// The payload of a test that skipped itself.
struct Skipped(String);

/// Ends the running test as skipped (reported `ignored (reason)`, counted as
/// skipped by the runners, never as passed).
pub fn skip(reason: impl Into<String>) -> ! {
    std::panic::panic_any(Skipped(reason.into()))
}

thread_local! {
    /// What the running test could not check (each test runs on its own thread).
    static SKIPPED_PARTS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Notes a part of the running test that this environment cannot check; the
/// test goes on with the rest.
pub fn skip_part(reason: impl Into<String>) {
    let reason = reason.into();
    eprintln!("SKIPPED (part): {reason}");
    SKIPPED_PARTS.with(|p| p.borrow_mut().push(reason));
}

/// Held by every running test, shared; [`alone`] takes it whole.
static RUNNING: RwLock<()> = RwLock::new(());

/// How the running test holds [`RUNNING`] (kept only to be dropped at its end).
enum Hold {
    Shared { _guard: RwLockReadGuard<'static, ()> },
    Alone { _guard: RwLockWriteGuard<'static, ()> },
}

thread_local! {
    static HOLD: RefCell<Option<Hold>> = const { RefCell::new(None) };
}

/// Waits until no other test of this suite runs, and keeps the rest from
/// starting until the running test ends. For a test that changes what the
/// whole kernel does for a moment (a switch every daemon's hooks depend on),
/// which a test running beside it would see.
pub fn alone() {
    HOLD.with(|hold| {
        hold.borrow_mut().take();
        let whole = RUNNING.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *hold.borrow_mut() = Some(Hold::Alone { _guard: whole });
    });
}

/// Runs `tests` (name, function) with the command line's filters and threads.
pub fn run(tests: &[(&'static str, fn())]) -> std::process::ExitCode {
    let args = Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("suite skipped: its {} tests need root (they load eBPF programs or install system files); run sudo ./scripts/test.sh", tests.len());
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<Skipped>().is_none() {
            default_hook(info);
        }
    }));
    let trials = tests
        .iter()
        .map(|&(name, test)| {
            Trial::ignorable_test(name, move || {
                if !root {
                    return Ok(Completion::ignored_with("needs root"));
                }
                let started = std::time::Instant::now();
                SKIPPED_PARTS.with(|p| p.borrow_mut().clear());
                HOLD.with(|hold| *hold.borrow_mut() = Some(Hold::Shared { _guard: RUNNING.read().unwrap_or_else(|poisoned| poisoned.into_inner()) }));
                let outcome = catch_unwind(AssertUnwindSafe(test));
                HOLD.with(|hold| hold.borrow_mut().take());
                let skipped_parts = SKIPPED_PARTS.with(|p| std::mem::take(&mut *p.borrow_mut()));
                // Where the suites' time goes (the vm-tests under TCG are CI's longest phase).
                // One write, so the line is not interleaved with the other thread's output.
                let line = format!("test-time: {name} {:.1} s\n", started.elapsed().as_secs_f64());
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                match outcome {
                    Ok(()) if skipped_parts.is_empty() => Ok(Completion::Completed),
                    Ok(()) => Ok(Completion::ignored_with(format!("the rest passed; not checked here: {}", skipped_parts.join("; ")))),
                    Err(payload) => match payload.downcast::<Skipped>() {
                        Ok(skipped) => Ok(Completion::ignored_with(skipped.0)),
                        Err(payload) => Err(Failed::from(panic_message(&*payload))),
                    },
                }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the test panicked".to_string())
}

/// `fn main` of a suite: the tests it runs, by name.
#[macro_export]
macro_rules! kernel_tests {
    ($($test:ident),* $(,)?) => {
        fn main() -> std::process::ExitCode {
            support::harness::run(&[$((stringify!($test), $test as fn())),*])
        }
    };
}
