//! What metrics cost one request: the records of an answered command (its counter, its
//! request and handler durations), with no recorder and with the Prometheus recorder
//! `yuyo serve --metrics` installs (its histogram upkeep included, as it runs on the
//! server's core too).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use yuyo_core::metrics::{EndpointMetrics, RequestKind, SECONDS_BUCKETS};

fn record(metrics: &EndpointMetrics, start: Instant) {
    let end = start + Duration::from_micros(40);
    metrics.handled(RequestKind::Command, start, end);
    metrics.responded(RequestKind::Command, http::StatusCode::OK, end - start);
}

fn bench(c: &mut Criterion) {
    let start = Instant::now();
    let none = EndpointMetrics::default();
    c.bench_function("metrics/command/no_recorder", |b| {
        b.iter(|| record(black_box(&none), start));
    });
    let recorder = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let prometheus = metrics::with_local_recorder(&recorder, || {
        let metrics = EndpointMetrics::default();
        record(&metrics, start);
        metrics
    });
    c.bench_function("metrics/command/prometheus", |b| {
        b.iter_custom(|iters| {
            let began = Instant::now();
            for i in 0..iters {
                record(black_box(&prometheus), start);
                if i % 100_000 == 0 {
                    handle.run_upkeep();
                }
            }
            handle.run_upkeep();
            began.elapsed()
        });
    });
    assert!(handle.render().contains("yuyo_http_requests_total"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
