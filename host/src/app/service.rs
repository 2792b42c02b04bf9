//! The service manager's protocol (systemd's `sd_notify`): readiness once every listener is
//! bound and detection runs, the watchdog while the runtime is alive, `RELOADING=1` around a
//! SIGHUP reload, `STOPPING=1` when shutdown starts. Without `NOTIFY_SOCKET` (not started by
//! systemd, or `Type=simple`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Tells the service manager Vigil is ready, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager a reload has begun; [`ready`] ends it.
pub fn reloading() {
    // systemd matches RELOADING=1 to the reload by this timestamp (CLOCK_MONOTONIC).
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells the service manager Vigil is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Stopping: draining detection and sinks")]);
}

/// When the unit sets `WatchdogSec=`, pings the watchdog at half its interval until `stop`:
/// a runtime too wedged to run this task is restarted by systemd.
pub fn spawn_watchdog(stop: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
    tracing::info!(interval = ?every, "Pinging the systemd watchdog.");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
                () = stop.cancelled() => return,
            }
        }
    });
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "Could not notify the service manager.");
    }
}
