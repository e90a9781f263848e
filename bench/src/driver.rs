//! The load driver. Closed loop keeps a fixed number of requests in flight
//! and times each from when it is sent. Open loop sends request `i` at
//! `start + i / rate` whatever the responses do, and times it from that
//! scheduled moment. A request that waits for a free slot because the server
//! fell behind counts its wait, so coordinated omission does not hide
//! queueing.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::latency::Latency;

/// Distinct error labels kept per run; further labels are counted as
/// [`OTHER_ERRORS`].
const MAX_ERROR_LABELS: usize = 20;
const OTHER_ERRORS: &str = "other errors";

/// The outcome of one request: the number of items it carried (events of a
/// batch, 1 for a single request), or a short error label that the report
/// counts.
pub type CallResult = Result<u64, String>;

/// A request in flight.
pub type Call = Pin<Box<dyn Future<Output = CallResult> + Send>>;

/// A stream of requests that the driver can issue.
pub trait Workload: Send + Sync + 'static {
    /// Builds request number `index` and returns the future that sends it.
    /// The driver starts the clock after this returns, so building the
    /// request is not part of its closed-loop latency.
    fn call(&self, index: u64) -> Call;
}

/// How hard and how long to drive a workload.
#[derive(Clone, Debug)]
pub struct Load {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Target requests per second, open loop; `None` for closed loop.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Stops after this many requests, even before `duration` has passed.
    pub limit: Option<u64>,
}

/// Counts and latencies of one run.
#[derive(Clone, Debug, Default)]
pub struct Measurement {
    /// Latencies of the successful requests.
    pub latency: Latency,
    /// Requests sent.
    pub issued: u64,
    /// Open loop: requests whose scheduled time fell within the run,
    /// including those never sent because the run ended while they waited
    /// for a free slot. Closed loop: equal to `issued`.
    pub scheduled: u64,
    pub succeeded: u64,
    /// Items carried by the successful requests.
    pub items: u64,
    /// Failed requests by error label.
    pub errors: BTreeMap<String, u64>,
    /// From the start until the last response, and at least the run's duration.
    pub elapsed: Duration,
}

impl Measurement {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second.
    pub fn requests_per_second(&self) -> f64 {
        self.succeeded as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Items of the successful requests per second.
    pub fn items_per_second(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn record(&mut self, result: CallResult, latency: Duration) {
        match result {
            Ok(items) => {
                self.succeeded += 1;
                self.items += items;
                self.latency.record(latency);
            }
            Err(label) => {
                let label = if self.errors.len() < MAX_ERROR_LABELS || self.errors.contains_key(&label) {
                    label
                } else {
                    OTHER_ERRORS.to_owned()
                };
                *self.errors.entry(label).or_insert(0) += 1;
            }
        }
    }
}

type Tally = Arc<Mutex<Measurement>>;

fn record(tally: &Tally, result: CallResult, latency: Duration) {
    tally
        .lock()
        .expect("recording never panics while holding the lock")
        .record(result, latency);
}

/// Drives `workload` with `load` and returns what it measured. Every
/// completed request advances `progress` by one.
pub async fn drive(workload: Arc<dyn Workload>, load: &Load, progress: &ProgressBar) -> Measurement {
    let tally: Tally = Arc::default();
    let start = Instant::now();
    let (issued, scheduled) = match load.rate {
        Some(rate) => open_loop(workload, load, rate, &tally, progress, start).await,
        None => {
            let issued = closed_loop(workload, load, &tally, progress, start).await;
            (issued, issued)
        }
    };
    let elapsed = start.elapsed().max(load.duration);
    let mut measurement = std::mem::take(&mut *tally.lock().expect("every recording task has finished"));
    measurement.issued = issued;
    measurement.scheduled = scheduled;
    measurement.elapsed = elapsed;
    measurement
}

/// Runs `concurrency` workers that each send a request as soon as their
/// previous one completes. Returns the number of requests sent.
async fn closed_loop(
    workload: Arc<dyn Workload>,
    load: &Load,
    tally: &Tally,
    progress: &ProgressBar,
    start: Instant,
) -> u64 {
    let end = start + load.duration;
    let limit = load.limit.unwrap_or(u64::MAX);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..load.concurrency.max(1) {
        let (workload, tally, progress, next) = (workload.clone(), tally.clone(), progress.clone(), next.clone());
        workers.spawn(async move {
            while Instant::now() < end {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= limit {
                    break;
                }
                let call = workload.call(index);
                let sent = Instant::now();
                let result = call.await;
                record(&tally, result, sent.elapsed());
                progress.inc(1);
            }
        });
    }
    join_all(&mut workers).await;
    next.load(Ordering::Relaxed).min(limit)
}

/// Sends request `i` at `start + i / rate`, with at most `concurrency` in
/// flight. A request due while every slot is taken waits for one, and its
/// latency includes that wait. Once the run's end has passed, requests still
/// waiting are not sent. Returns the numbers of requests sent and scheduled.
async fn open_loop(
    workload: Arc<dyn Workload>,
    load: &Load,
    rate: f64,
    tally: &Tally,
    progress: &ProgressBar,
    start: Instant,
) -> (u64, u64) {
    let end = start + load.duration;
    let limit = load.limit.unwrap_or(u64::MAX);
    let slots = Arc::new(Semaphore::new(load.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let mut index = 0;
    while index < limit {
        let due = start + Duration::from_secs_f64(index as f64 / rate);
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if Instant::now() >= end {
            break;
        }
        let call = workload.call(index);
        let (tally, progress) = (tally.clone(), progress.clone());
        in_flight.spawn(async move {
            let result = call.await;
            let latency = due.elapsed();
            drop(slot);
            record(&tally, result, latency);
            progress.inc(1);
        });
        index += 1;
        while in_flight.try_join_next().is_some() {}
    }
    join_all(&mut in_flight).await;
    let scheduled = (load.duration.as_secs_f64() * rate).ceil() as u64;
    (index, scheduled.min(limit).max(index))
}

/// Waits for every task, passing a panic on to the caller.
async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes every request after `service_time`, failing every `fail_every`-th.
    struct Sleeper {
        service_time: Duration,
        fail_every: Option<u64>,
    }

    impl Workload for Sleeper {
        fn call(&self, index: u64) -> Call {
            let service_time = self.service_time;
            let fails = self.fail_every.is_some_and(|every| index % every == every - 1);
            Box::pin(async move {
                tokio::time::sleep(service_time).await;
                if fails { Err("refused".to_owned()) } else { Ok(3) }
            })
        }
    }

    fn sleeper(millis: u64) -> Arc<dyn Workload> {
        Arc::new(Sleeper {
            service_time: Duration::from_millis(millis),
            fail_every: None,
        })
    }

    fn load(concurrency: usize, rate: Option<f64>, seconds: u64) -> Load {
        Load {
            concurrency,
            rate,
            duration: Duration::from_secs(seconds),
            limit: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_issues_rate_times_duration() {
        let measured = drive(sleeper(3), &load(32, Some(1_000.0), 2), &ProgressBar::hidden()).await;
        assert_eq!(measured.scheduled, 2_000, "scheduled");
        assert!(
            measured.issued.abs_diff(2_000) <= 20,
            "issued {} within 1% of 2000",
            measured.issued
        );
        assert_eq!(measured.succeeded, measured.issued, "every request succeeds");
        assert_eq!(measured.items, 3 * measured.succeeded, "items");
        assert_eq!(measured.latency.count(), measured.succeeded, "one latency per success");
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_stops_at_end_when_behind() {
        // One slot and 10 ms per request allow 100 requests/s against a
        // schedule of 1000/s: the run sends about a tenth of its schedule.
        let measured = drive(sleeper(10), &load(1, Some(1_000.0), 1), &ProgressBar::hidden()).await;
        assert_eq!(measured.scheduled, 1_000, "scheduled");
        assert!(
            (95..=105).contains(&measured.issued),
            "issued {} near 100",
            measured.issued
        );
        let late = measured.latency.quantile_micros(0.99);
        assert!(
            late > 10 * 10_000,
            "p99 {late} us includes the wait for a slot, not only the 10 ms service time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_keeps_slots_busy() {
        // 4 slots of 10 ms each over 1 s: 400 requests.
        let measured = drive(sleeper(10), &load(4, None, 1), &ProgressBar::hidden()).await;
        assert!(
            measured.issued.abs_diff(400) <= 4,
            "issued {} near 400",
            measured.issued
        );
        assert_eq!(measured.scheduled, measured.issued, "scheduled equals issued");
        assert_eq!(measured.succeeded, measured.issued, "every request succeeds");
    }

    #[tokio::test(start_paused = true)]
    async fn limit_stops_both_loops() {
        for rate in [None, Some(10_000.0)] {
            let mut load = load(8, rate, 60);
            load.limit = Some(250);
            let measured = drive(sleeper(1), &load, &ProgressBar::hidden()).await;
            assert_eq!(measured.issued, 250, "issued with rate {rate:?}");
            assert_eq!(measured.succeeded, 250, "succeeded with rate {rate:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn errors_counted_by_label() {
        let workload = Arc::new(Sleeper {
            service_time: Duration::from_millis(1),
            fail_every: Some(10),
        });
        let mut load = load(2, None, 60);
        load.limit = Some(100);
        let measured = drive(workload, &load, &ProgressBar::hidden()).await;
        assert_eq!(measured.errors.get("refused"), Some(&10), "errors by label");
        assert_eq!(measured.error_count(), 10, "error count");
        assert_eq!(measured.succeeded, 90, "successes");
        assert_eq!(measured.latency.count(), 90, "failures record no latency");
    }

    #[test]
    fn error_labels_are_bounded() {
        let mut measurement = Measurement::default();
        for index in 0..50 {
            measurement.record(Err(format!("error {index}")), Duration::ZERO);
        }
        assert_eq!(measurement.errors.len(), MAX_ERROR_LABELS + 1, "labels kept");
        assert_eq!(measurement.errors.get(OTHER_ERRORS), Some(&30), "overflow count");
        assert_eq!(measurement.error_count(), 50, "every error counted");
    }
}
