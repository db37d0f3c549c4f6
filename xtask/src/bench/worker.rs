//! `xtask bench worker ...`: the load generators. The bench starts them either
//! directly (no daemon / untagged) or through `airlock-agent launch` (governed).
//! Each times only its own loop and prints one number as its last line, so
//! process start-up and the launch handshake are not measured.
//!
//!   exec N [gate]             spawn /bin/true N times; prints elapsed ns
//!   connect ADDR N [gate]     TCP connect to ADDR N times; prints elapsed ns
//!                             gate: print "ready" and wait for a line on stdin first
//!   udp ADDR RATE MILLIS      connect() a UDP socket to ADDR at RATE per second
//!                             (0: as fast as possible) for MILLIS; prints the count
//!   script PATH               run `bash PATH`; prints elapsed ns

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::policy::TRUE_ARGS;

pub fn run(args: &[String]) -> Result<()> {
    let arg = |i: usize, what: &str| args.get(i).map(String::as_str).with_context(|| format!("worker: missing {what}"));
    let number = |i: usize, what: &str| -> Result<u64> { arg(i, what)?.parse().with_context(|| format!("worker: {what} is not a number")) };
    let addr = |i: usize| -> Result<SocketAddr> { arg(i, "ADDR")?.parse().context("worker: ADDR is not ip:port") };
    let gated = |i: usize| -> Result<()> {
        if args.get(i).map(String::as_str) == Some("gate") {
            wait_at_gate()?;
        }
        Ok(())
    };
    let result = match arg(0, "kind")? {
        "exec" => {
            gated(2)?;
            exec_storm(number(1, "N")?)?
        }
        "connect" => {
            gated(3)?;
            connect_storm(addr(1)?, number(2, "N")?)?
        }
        "udp" => udp_connects(addr(1)?, number(2, "RATE")?, Duration::from_millis(number(3, "MILLIS")?))?,
        "script" => script(arg(1, "PATH")?)?,
        other => bail!("worker: unknown kind {other:?}"),
    };
    println!("{result}");
    Ok(())
}

/// Lets the bench act between "this process is governed" and "the loop starts".
fn wait_at_gate() -> Result<()> {
    use std::io::{BufRead, Write};
    let mut out = std::io::stdout();
    writeln!(out, "ready").and_then(|_| out.flush()).context("worker: tell the bench it is ready")?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("worker: wait for the bench")?;
    Ok(())
}

fn exec_storm(n: u64) -> Result<u64> {
    let start = Instant::now();
    for i in 0..n {
        let status = Command::new("/bin/true").args(TRUE_ARGS).status().context("spawn /bin/true")?;
        if !status.success() {
            bail!("/bin/true failed on spawn {i}: {status} (killed by a rule?)");
        }
    }
    Ok(start.elapsed().as_nanos() as u64)
}

fn connect_storm(addr: SocketAddr, n: u64) -> Result<u64> {
    let start = Instant::now();
    for i in 0..n {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {i} to {addr}"))?;
        reset_on_close(&stream);
    }
    Ok(start.elapsed().as_nanos() as u64)
}

/// SO_LINGER 0: close() sends RST and leaves no TIME_WAIT entry, so tens of
/// thousands of connects do not run out of loopback ports.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket fd and a linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A UDP connect() sends nothing, so this is the cheapest decision a process
/// can ask the kernel for: it drives the audit path, not the network.
fn udp_connects(addr: SocketAddr, rate: u64, duration: Duration) -> Result<u64> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("bind a UDP socket")?;
    let start = Instant::now();
    let mut done: u64 = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        // Paced: catch up to rate × elapsed in a burst, then yield briefly.
        let due = if rate == 0 { done + 64 } else { (rate as u128 * elapsed.as_nanos() / 1_000_000_000) as u64 };
        if done >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        while done < due {
            socket.connect(addr).with_context(|| format!("UDP connect {done} to {addr}"))?;
            done += 1;
        }
    }
    Ok(done)
}

fn script(path: &str) -> Result<u64> {
    let start = Instant::now();
    let status = Command::new("bash").arg(path).stdout(Stdio::null()).status().context("run bash")?;
    if !status.success() {
        bail!("bash {path} failed: {status}");
    }
    Ok(start.elapsed().as_nanos() as u64)
}
