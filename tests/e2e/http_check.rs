//! The http_check plugin through the real host against real HTTP(S) servers on loopback.

use std::time::Duration;

use kennel_tests::http_server::{HttpServer, Reply, closed_port};
use kennel_tests::{host, instance, plugin_config};
use runner::check::{RunReport, Status};

async fn run_http_check(yaml: &str) -> RunReport {
    let host = host(plugin_config());
    let plugin = host.load("http_check").expect("http_check loads");
    let instance = instance("http_check", yaml);
    host.run(&plugin, &instance).await
}

fn can_connect(report: &RunReport) -> (Status, String) {
    let sc = report
        .service_checks
        .iter()
        .find(|s| s.name == "http.can_connect")
        .unwrap_or_else(|| panic!("no http.can_connect in {report:#?}"));
    (sc.status, sc.message.clone())
}

fn gauge(report: &RunReport, name: &str) -> Option<f64> {
    report
        .metrics
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
}

#[tokio::test(flavor = "multi_thread")]
async fn site_up_reports_ok_response_time_and_tags() {
    let server = HttpServer::start(|_| Reply::ok("hello")).await;
    let url = server.url("/health");
    let report = run_http_check(&format!(
        "instances:\n  - name: web\n    url: {url}\n    tags: [env:test]\n"
    ))
    .await;
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(can_connect(&report).0, Status::Ok);
    assert_eq!(gauge(&report, "network.http.can_connect"), Some(1.0));
    assert_eq!(gauge(&report, "network.http.cant_connect"), Some(0.0));
    let response_time = gauge(&report, "network.http.response_time").expect("response time");
    assert!(
        response_time > 0.0 && response_time < 1.0,
        "{response_time}"
    );
    for metric in &report.metrics {
        for tag in [
            format!("url:{url}"),
            "instance:web".to_owned(),
            "env:test".to_owned(),
        ] {
            assert!(
                metric.tags.contains(&tag),
                "{} lacks {tag}: {:?}",
                metric.name,
                metric.tags
            );
        }
        assert_eq!(metric.host, "test-host");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_500_is_critical_under_default_status_regex() {
    let server = HttpServer::start(|_| Reply::status(500, "boom")).await;
    let report = run_http_check(&format!(
        "instances:\n  - name: web\n    url: {}\n",
        server.url("/")
    ))
    .await;
    let (status, message) = can_connect(&report);
    assert_eq!(status, Status::Critical);
    assert!(
        message.contains("Expected 1xx or 2xx or 3xx, got 500"),
        "{message}"
    );
    assert_eq!(gauge(&report, "network.http.can_connect"), Some(0.0));
    assert_eq!(gauge(&report, "network.http.response_time"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_500_is_ok_when_the_status_regex_accepts_it() {
    let server = HttpServer::start(|_| Reply::status(500, "boom")).await;
    let report = run_http_check(&format!(
        "instances:\n  - name: web\n    url: {}\n    http_response_status_code: '5\\d\\d'\n",
        server.url("/")
    ))
    .await;
    assert_eq!(can_connect(&report).0, Status::Ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_match_and_reverse_match() {
    let server = HttpServer::start(|_| Reply::ok("status: healthy")).await;
    let url = server.url("/");
    let found = run_http_check(&format!(
        "instances:\n  - name: a\n    url: {url}\n    content_match: 'heal+thy'\n"
    ))
    .await;
    assert_eq!(can_connect(&found).0, Status::Ok);

    let missing = run_http_check(&format!(
        "instances:\n  - name: a\n    url: {url}\n    content_match: sick\n"
    ))
    .await;
    let (status, message) = can_connect(&missing);
    assert_eq!(status, Status::Critical);
    assert!(message.contains(r#"Content "sick" not found"#), "{message}");

    let reverse = run_http_check(&format!(
        "instances:\n  - name: a\n    url: {url}\n    content_match: healthy\n    reverse_content_match: true\n"
    ))
    .await;
    assert_eq!(can_connect(&reverse).0, Status::Critical);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_server_is_critical_with_a_timeout() {
    let server = HttpServer::start(|_| Reply::ok("late").delayed(Duration::from_secs(3))).await;
    let report = run_http_check(&format!(
        "instances:\n  - name: slow\n    url: {}\n    timeout: 0.5\n",
        server.url("/")
    ))
    .await;
    let (status, message) = can_connect(&report);
    assert_eq!(status, Status::Critical);
    assert!(message.to_lowercase().contains("timeout"), "{message}");
    assert!(
        report.is_ok(),
        "a down site is a successful check run: {report:#?}"
    );
    // The run's own length, without the plugin's compilation: cut at 0.5 s, later on a loaded
    // machine; a request left to finish would take the server's 3 s.
    assert!(
        report.duration < Duration::from_secs(2),
        "took {:?}",
        report.duration
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_is_critical() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let report = run_http_check(&format!("instances:\n  - name: gone\n    url: {url}\n")).await;
    let (status, message) = can_connect(&report);
    assert_eq!(status, Status::Critical);
    assert!(message.contains("Connection failed after"), "{message}");
    assert_eq!(gauge(&report, "network.http.cant_connect"), Some(1.0));
}

async fn ssl_cert(days: i64, extra: &str) -> (RunReport, Status, String) {
    let server = HttpServer::start_tls(
        time::Duration::days(days) + time::Duration::hours(1),
        |_| Reply::ok("tls"),
    )
    .await;
    let report = run_http_check(&format!(
        "instances:\n  - name: tls\n    url: {}\n    tls_verify: false\n{extra}",
        server.url("/")
    ))
    .await;
    let sc = report
        .service_checks
        .iter()
        .find(|s| s.name == "http.ssl_cert")
        .unwrap_or_else(|| panic!("no http.ssl_cert in {report:#?}"))
        .clone();
    (report, sc.status, sc.message)
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_certificate_days_left_and_thresholds() {
    let (report, status, message) = ssl_cert(30, "").await;
    assert_eq!(status, Status::Ok, "{message}");
    assert_eq!(can_connect(&report).0, Status::Ok);
    let days = gauge(&report, "http.ssl.days_left").expect("days_left");
    assert!((30.0..30.1).contains(&days), "{days}");

    let (_, status, message) = ssl_cert(10, "").await;
    assert_eq!(status, Status::Warning, "{message}");
    assert!(message.contains("only 10 days left"), "{message}");

    let (_, status, message) = ssl_cert(3, "").await;
    assert_eq!(status, Status::Critical, "{message}");

    let (_, status, _) = ssl_cert(10, "    days_warning: 5\n    days_critical: 2\n").await;
    assert_eq!(status, Status::Ok, "custom thresholds apply");
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_certificate_fails_verification_by_default() {
    let server = HttpServer::start_tls(time::Duration::days(30), |_| Reply::ok("tls")).await;
    let report = run_http_check(&format!(
        "instances:\n  - name: tls\n    url: {}\n",
        server.url("/")
    ))
    .await;
    let (status, message) = can_connect(&report);
    assert_eq!(status, Status::Critical);
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}
