//! `http_check`: Datadog's HTTP check as a Kennel plugin. Each run sends one request through the
//! runner's HTTP capability and reports whether the site is up (it answered, with an expected
//! status code and, if asked, the expected content) and, for HTTPS, how long its certificate has
//! left. Options are documented in `config.rs`; emitted, tagged `url:<url>` and `instance:<name>`:
//!
//! - service check `http.can_connect`: OK, or CRITICAL with Datadog's messages (`E. Connection
//!   failed after N ms`, `Incorrect HTTP return code for url U. Expected 1xx or 2xx or 3xx, got
//!   N.`, `Content "P" not found in response.`);
//! - gauges `network.http.can_connect` (1/0), `network.http.cant_connect` (0/1), and
//!   `network.http.response_time` in seconds when the site is up and `collect_response_time` is on;
//! - for `https://` with `check_certificate_expiration`: gauges `http.ssl.days_left` and
//!   `http.ssl.seconds_left`, and service check `http.ssl_cert` (OK, WARNING under `days_warning`,
//!   CRITICAL under `days_critical`, UNKNOWN when no certificate could be read).
//!
//! Design decisions:
//! - A site that is down is what the check exists to report, so the run still succeeds. A
//!   problem only the user can fix (bad options, egress not granted, a request the capability
//!   rejects as malformed) fails the run *and* emits the CRITICAL service check with the same
//!   message, so monitors notice it too.
//! - The certificate comes from the same request (the capability returns the peer's `notAfter`
//!   whether or not it was verified) instead of a second TLS connection as in Datadog. So it is
//!   read with `tls_verify: false` too, and a failed request leaves `http.ssl_cert` UNKNOWN,
//!   except a TLS error about expiry, which is CRITICAL with 0 days left, as in Datadog.
//! - `http.ssl.days_left` is fractional (seconds left / 86400); the messages give whole days,
//!   rounded down like Python's `timedelta.days`.
//! - `http_response_status_code` is anchored at the start only, like Python's `re.match`, so
//!   Datadog patterns mean the same (`2` accepts 200-299).
//! - `include_content` adds at most the first 200 characters of the body, then `...`.
//!
//! Differences from Datadog: `tls_verify` defaults to true (Datadog's http_check defaults it to
//! false); `network.http.response_time` is not sent for a wrong status or content (Datadog sends
//! it for any answer); `name` is optional; the OK `http.ssl_cert` keeps its "Days left: N"
//! message. Regexes use Rust's syntax, which lacks look-around and backreferences, through
//! `regex-lite`: its character classes (`\d`, `\w`, case-insensitivity) are ASCII-only, and in
//! exchange a pattern compiles in microseconds rather than the hundreds the full `regex` crate
//! takes inside wasm, which made up most of a run's time (and half the plugin's size).
//!
//! Missing: content is matched against the body as far as the runner's body cap (a match past it
//! is not found); the options listed as unsupported in `config.rs`.

#![forbid(unsafe_code)]

mod config;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kennel_sdk::{
    Check, ConfigError, Ctx, HttpError, HttpRequest, HttpResponse, Status, export_check,
};

use config::{Config, InitConfig, Options, SECONDS_PER_DAY};

const CAN_CONNECT: &str = "http.can_connect";
const SSL_CERT: &str = "http.ssl_cert";
const RESPONSE_TIME: &str = "network.http.response_time";
const CAN_CONNECT_GAUGE: &str = "network.http.can_connect";
const CANT_CONNECT_GAUGE: &str = "network.http.cant_connect";
const DAYS_LEFT: &str = "http.ssl.days_left";
const SECONDS_LEFT: &str = "http.ssl.seconds_left";
/// How much of the body `include_content` puts in a message.
const CONTENT_LENGTH: usize = 200;

pub struct HttpCheck;

impl Check for HttpCheck {
    type Config = Options;

    fn run(cx: &mut Ctx, options: Options) -> kennel_sdk::Result {
        let tags = options.tags();
        let config = match cx.init_config::<Option<InitConfig>>() {
            Ok(init_config) => Config::new(options, init_config, cx.timeout()),
            Err(error) => return fail(cx, &error.to_string(), &tags),
        };

        let mut request = HttpRequest::new(&config.method, &config.url)
            .timeout_ms(config.timeout_ms())
            .verify_tls(config.tls_verify)
            .follow_redirects(config.allow_redirects);
        request.headers = config.headers.clone();
        request.body = config.body.clone();
        let started = Instant::now();
        let result = cx.http(request);
        let waited_ms = started.elapsed().as_millis();

        // `None` when up, else why it is down.
        let down = match &result {
            Ok(response) => judge(&config, response).err(),
            Err(error @ (HttpError::Denied(_) | HttpError::InvalidRequest(_))) => {
                return fail(cx, &error.to_string(), &tags);
            }
            Err(HttpError::Timeout(message)) => Some(format!(
                "Timeout error: {message}. Connection failed after {waited_ms} ms"
            )),
            Err(error) => Some(format!("{error}. Connection failed after {waited_ms} ms")),
        };
        cx.debug(&format!(
            "{} {} took {waited_ms} ms: {}",
            config.method,
            config.url,
            down.as_deref().unwrap_or("up")
        ));

        if let (Ok(response), None) = (&result, &down)
            && config.collect_response_time
        {
            cx.gauge(RESPONSE_TIME, response.elapsed.as_secs_f64(), &tags);
        }
        let up = if down.is_none() { 1.0 } else { 0.0 };
        cx.gauge(CAN_CONNECT_GAUGE, up, &tags);
        cx.gauge(CANT_CONNECT_GAUGE, 1.0 - up, &tags);
        match &down {
            None => cx.service_check(CAN_CONNECT, Status::Ok, None, &tags),
            Some(message) => cx.service_check(CAN_CONNECT, Status::Critical, Some(message), &tags),
        }

        if config.check_certificate_expiration && config.is_https() {
            check_certificate(cx, &config, &result, &tags);
        }
        Ok(())
    }

    fn config_error(cx: &mut Ctx, error: &ConfigError) -> kennel_sdk::Result {
        fail(cx, &error.to_string(), &config::raw_tags(error.raw()))
    }
}

export_check!(HttpCheck);

/// A problem for the user to fix rather than news about the site: the run fails, and the
/// CRITICAL service check carries the same message so that monitors see it.
fn fail(cx: &mut Ctx, message: &str, tags: &[String]) -> kennel_sdk::Result {
    cx.service_check(CAN_CONNECT, Status::Critical, Some(message), tags);
    Err(message.into())
}

/// Whether an answer counts as up: `Err` holds the CRITICAL message.
fn judge(config: &Config, response: &HttpResponse) -> Result<(), String> {
    let content = response.text();
    let message = if !config.expected_status.accepts(response.status) {
        format!(
            "Incorrect HTTP return code for url {}. Expected {}, got {}.",
            config.url,
            config.expected_status.describe(),
            response.status
        )
    } else {
        match &config.content_match {
            None => return Ok(()),
            Some(pattern) => {
                let text = &pattern.text;
                match (
                    pattern.regex.is_match(&content),
                    config.reverse_content_match,
                ) {
                    (true, false) | (false, true) => return Ok(()),
                    (false, false) => format!("Content \"{text}\" not found in response."),
                    (true, true) => format!(
                        "Content \"{text}\" found in response with the reverse_content_match"
                    ),
                }
            }
        }
    };
    if !config.include_content {
        return Err(message);
    }
    let snippet: String = content.chars().take(CONTENT_LENGTH).collect();
    let cut = if content.chars().nth(CONTENT_LENGTH).is_some() {
        "..."
    } else {
        ""
    };
    Err(format!("{message}\nContent: {snippet}{cut}"))
}

fn check_certificate(
    cx: &mut Ctx,
    config: &Config,
    result: &Result<HttpResponse, HttpError>,
    tags: &[String],
) {
    let not_after = match result {
        Ok(HttpResponse {
            cert_not_after: Some(not_after),
            ..
        }) => *not_after,
        Ok(_) => {
            let message = "Empty or no certificate found.";
            return cx.service_check(SSL_CERT, Status::Unknown, Some(message), tags);
        }
        // Datadog's words for a handshake refused over an expired certificate.
        Err(error @ HttpError::Tls(message)) if message.to_ascii_lowercase().contains("expir") => {
            cx.gauge(DAYS_LEFT, 0.0, tags);
            cx.gauge(SECONDS_LEFT, 0.0, tags);
            let message = error.to_string();
            return cx.service_check(SSL_CERT, Status::Critical, Some(&message), tags);
        }
        Err(error) => {
            let message = error.to_string();
            return cx.service_check(SSL_CERT, Status::Unknown, Some(&message), tags);
        }
    };

    // A clock before 1970 is not worth failing over: the certificate then looks far from expiry.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let seconds_left = not_after as f64 - now;
    let days_left = seconds_left / SECONDS_PER_DAY;
    let whole_days = days_left.floor() as i64;
    cx.gauge(DAYS_LEFT, days_left, tags);
    cx.gauge(SECONDS_LEFT, seconds_left, tags);
    let (status, message) = if seconds_left < config.seconds_critical {
        let message =
            format!("This cert TTL is critical: only {whole_days} days before it expires");
        (Status::Critical, message)
    } else if seconds_left < config.seconds_warning {
        let message = format!("This cert is almost expired, only {whole_days} days left");
        (Status::Warning, message)
    } else {
        (Status::Ok, format!("Days left: {whole_days}"))
    };
    cx.service_check(SSL_CERT, status, Some(&message), tags);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kennel_sdk::testing::{Harness, Recorded};
    use kennel_sdk::{ServiceCheck, Status};
    use serde_json::{Value, json};

    use super::*;

    const URL: &str = "http://example.com/health";
    const HTTPS_URL: &str = "https://example.com/health";
    const DAY: i64 = 86_400;

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            body: body.as_bytes().to_vec(),
            elapsed: Duration::from_millis(250),
            ..HttpResponse::default()
        }
    }

    /// A 200 whose certificate expires `seconds` from now (plus a minute, so that the whole
    /// number of days does not depend on how long the test takes).
    fn answer_with_cert(seconds: i64) -> HttpResponse {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        HttpResponse {
            cert_not_after: Some(now + seconds + 60),
            ..answer(200, "ok")
        }
    }

    fn run(instance: Value, result: Result<HttpResponse, HttpError>) -> Recorded {
        Harness::new()
            .on_http(move |_| result.clone())
            .run::<HttpCheck>(instance)
    }

    fn gauge(recorded: &Recorded, name: &str) -> Option<f64> {
        recorded.metric(name).map(|metric| metric.value)
    }

    fn service_check<'r>(recorded: &'r Recorded, name: &str) -> &'r ServiceCheck {
        match recorded.service_check(name) {
            Some(service_check) => service_check,
            None => panic!("no {name} service check in {:?}", recorded.service_checks),
        }
    }

    fn message<'r>(recorded: &'r Recorded, name: &str) -> &'r str {
        service_check(recorded, name)
            .message
            .as_deref()
            .unwrap_or("")
    }

    fn sent(recorded: &Recorded) -> &HttpRequest {
        assert_eq!(recorded.http_requests.len(), 1, "one request per run");
        &recorded.http_requests[0]
    }

    fn header<'r>(request: &'r HttpRequest, name: &str) -> Option<&'r str> {
        request
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn status_200_is_up_with_response_time_and_ok() {
        let recorded = run(json!({"name": "site", "url": URL}), Ok(answer(200, "ok")));
        assert!(recorded.result.is_ok());
        assert_eq!(gauge(&recorded, RESPONSE_TIME), Some(0.25));
        assert_eq!(gauge(&recorded, CAN_CONNECT_GAUGE), Some(1.0));
        assert_eq!(gauge(&recorded, CANT_CONNECT_GAUGE), Some(0.0));
        let sc = service_check(&recorded, CAN_CONNECT);
        assert_eq!((sc.status, sc.message.as_deref()), (Status::Ok, None));
    }

    #[test]
    fn every_metric_and_service_check_is_tagged_with_url_and_instance() {
        let recorded = run(
            json!({"name": "site", "url": HTTPS_URL}),
            Ok(answer_with_cert(30 * DAY)),
        );
        let expected = vec![format!("url:{HTTPS_URL}"), "instance:site".to_owned()];
        assert_eq!(recorded.metrics.len(), 5);
        assert_eq!(recorded.service_checks.len(), 2);
        for metric in &recorded.metrics {
            assert_eq!(metric.tags, expected, "{}", metric.name);
        }
        for sc in &recorded.service_checks {
            assert_eq!(sc.tags, expected, "{}", sc.name);
        }
    }

    #[test]
    fn instance_tag_is_the_name_normalized_like_datadog() {
        let recorded = run(
            json!({"name": "My Site-(prod)", "url": URL}),
            Ok(answer(200, "")),
        );
        let tags = &service_check(&recorded, CAN_CONNECT).tags;
        assert!(
            tags.contains(&"instance:My_Site_prod".to_owned()),
            "{tags:?}"
        );
    }

    #[test]
    fn instance_tag_falls_back_to_the_url_without_a_name() {
        let recorded = run(json!({"url": URL}), Ok(answer(200, "")));
        let tags = &service_check(&recorded, CAN_CONNECT).tags;
        assert_eq!(tags, &[format!("url:{URL}"), format!("instance:{URL}")]);
    }

    #[test]
    fn credentials_in_the_url_stay_out_of_the_tags() {
        let recorded = run(
            json!({"url": "http://admin:s3cret@example.com:8080/health?x=a@b"}),
            Ok(answer(200, "")),
        );
        let tags = &service_check(&recorded, CAN_CONNECT).tags;
        assert_eq!(
            tags,
            &[
                "url:http://example.com:8080/health?x=a@b".to_owned(),
                "instance:http://example.com:8080/health?x=a@b".to_owned()
            ]
        );
    }

    #[test]
    fn reserved_runner_keys_are_ignored() {
        let instance = json!({
            "name": "site", "url": URL, "tags": ["env:prod"], "service": "web",
            "min_collection_interval": 30, "allowed_hosts": ["example.com"],
            "empty_default_hostname": true, "some_future_key": {"x": 1},
        });
        let recorded = run(instance, Ok(answer(200, "")));
        assert!(recorded.result.is_ok(), "{:?}", recorded.result);
        assert_eq!(service_check(&recorded, CAN_CONNECT).status, Status::Ok);
    }

    #[test]
    fn status_500_is_critical_with_expected_codes_in_message() {
        let recorded = run(json!({"name": "site", "url": URL}), Ok(answer(500, "oops")));
        assert!(recorded.result.is_ok(), "a down site is not a failed run");
        let sc = service_check(&recorded, CAN_CONNECT);
        assert_eq!(sc.status, Status::Critical);
        assert_eq!(
            message(&recorded, CAN_CONNECT),
            format!(
                "Incorrect HTTP return code for url {URL}. Expected 1xx or 2xx or 3xx, got 500."
            )
        );
        assert_eq!(gauge(&recorded, CAN_CONNECT_GAUGE), Some(0.0));
        assert_eq!(gauge(&recorded, CANT_CONNECT_GAUGE), Some(1.0));
        assert_eq!(gauge(&recorded, RESPONSE_TIME), None);
    }

    #[test]
    fn custom_status_regex_accepts_500() {
        let instance = json!({"name": "site", "url": URL, "http_response_status_code": "5\\d\\d"});
        let recorded = run(instance, Ok(answer(500, "")));
        assert_eq!(service_check(&recorded, CAN_CONNECT).status, Status::Ok);
        assert_eq!(gauge(&recorded, CAN_CONNECT_GAUGE), Some(1.0));
    }

    #[test]
    fn custom_status_regex_is_quoted_in_the_critical_message() {
        let instance = json!({"name": "site", "url": URL, "http_response_status_code": 401});
        let recorded = run(instance, Ok(answer(200, "")));
        assert_eq!(
            message(&recorded, CAN_CONNECT),
            format!("Incorrect HTTP return code for url {URL}. Expected 401, got 200.")
        );
    }

    #[test]
    fn status_regex_is_anchored_at_the_start_like_python_re_match() {
        let prefix = json!({"name": "s", "url": URL, "http_response_status_code": "2"});
        let recorded = run(prefix, Ok(answer(204, "")));
        assert_eq!(service_check(&recorded, CAN_CONNECT).status, Status::Ok);

        let middle = json!({"name": "s", "url": URL, "http_response_status_code": "04"});
        let recorded = run(middle, Ok(answer(404, "")));
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
    }

    #[test]
    fn content_match_found_is_up() {
        let instance = json!({"name": "s", "url": URL, "content_match": "sta(tus|te): ok"});
        let recorded = run(instance, Ok(answer(200, "{\"status: ok\"}")));
        assert_eq!(service_check(&recorded, CAN_CONNECT).status, Status::Ok);
        assert!(gauge(&recorded, RESPONSE_TIME).is_some());
    }

    #[test]
    fn content_match_not_found_is_critical_without_response_time() {
        let instance = json!({"name": "s", "url": URL, "content_match": "healthy"});
        let recorded = run(instance, Ok(answer(200, "sick")));
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
        assert_eq!(
            message(&recorded, CAN_CONNECT),
            "Content \"healthy\" not found in response."
        );
        assert_eq!(gauge(&recorded, CAN_CONNECT_GAUGE), Some(0.0));
        assert_eq!(gauge(&recorded, RESPONSE_TIME), None);
    }

    #[test]
    fn reverse_content_match_found_is_critical() {
        let instance = json!({
            "name": "s", "url": URL, "content_match": "error", "reverse_content_match": true,
        });
        let recorded = run(instance, Ok(answer(200, "fatal error")));
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
        assert_eq!(
            message(&recorded, CAN_CONNECT),
            "Content \"error\" found in response with the reverse_content_match"
        );
    }

    #[test]
    fn reverse_content_match_not_found_is_up() {
        let instance = json!({
            "name": "s", "url": URL, "content_match": "error", "reverse_content_match": "yes",
        });
        let recorded = run(instance, Ok(answer(200, "all good")));
        assert_eq!(service_check(&recorded, CAN_CONNECT).status, Status::Ok);
    }

    #[test]
    fn include_content_appends_the_body_cut_at_200_characters() {
        let body = "é".repeat(250);
        let instance = json!({"name": "s", "url": URL, "include_content": true});
        let recorded = run(instance, Ok(answer(503, &body)));
        let expected = format!(
            "Incorrect HTTP return code for url {URL}. Expected 1xx or 2xx or 3xx, got 503.\
             \nContent: {}...",
            "é".repeat(200)
        );
        assert_eq!(message(&recorded, CAN_CONNECT), expected);

        let instance =
            json!({"name": "s", "url": URL, "include_content": true, "content_match": "x"});
        let recorded = run(instance, Ok(answer(200, "short body")));
        assert_eq!(
            message(&recorded, CAN_CONNECT),
            "Content \"x\" not found in response.\nContent: short body"
        );
    }

    #[test]
    fn connection_error_is_critical_with_the_time_waited() {
        let recorded = run(
            json!({"name": "s", "url": URL}),
            Err(HttpError::Connect("Connection refused".into())),
        );
        assert!(recorded.result.is_ok(), "a down site is not a failed run");
        let text = message(&recorded, CAN_CONNECT);
        assert!(
            text.starts_with("connection failed: Connection refused. Connection failed after ")
                && text.ends_with(" ms"),
            "{text}"
        );
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
        assert_eq!(gauge(&recorded, CAN_CONNECT_GAUGE), Some(0.0));
        assert_eq!(gauge(&recorded, CANT_CONNECT_GAUGE), Some(1.0));
        assert_eq!(gauge(&recorded, RESPONSE_TIME), None);
    }

    #[test]
    fn timeout_is_critical_with_a_timeout_error_message() {
        let recorded = run(
            json!({"name": "s", "url": URL}),
            Err(HttpError::Timeout("no answer within 10000 ms".into())),
        );
        assert!(recorded.result.is_ok());
        let text = message(&recorded, CAN_CONNECT);
        assert!(
            text.starts_with("Timeout error: no answer within 10000 ms. Connection failed after ")
                && text.ends_with(" ms"),
            "{text}"
        );
    }

    #[test]
    fn denied_egress_fails_the_run_and_reports_critical() {
        let recorded = run(
            json!({"name": "s", "url": HTTPS_URL}),
            Err(HttpError::Denied("example.com is not granted".into())),
        );
        assert_eq!(recorded.error(), "denied: example.com is not granted");
        let sc = service_check(&recorded, CAN_CONNECT);
        assert_eq!(sc.status, Status::Critical);
        assert_eq!(
            message(&recorded, CAN_CONNECT),
            "denied: example.com is not granted"
        );
        assert!(recorded.metrics.is_empty(), "nothing was measured");
        assert!(recorded.service_check(SSL_CERT).is_none());
    }

    #[test]
    fn cert_with_30_days_left_is_ok() {
        let recorded = run(
            json!({"name": "s", "url": HTTPS_URL}),
            Ok(answer_with_cert(30 * DAY)),
        );
        let sc = service_check(&recorded, SSL_CERT);
        assert_eq!(sc.status, Status::Ok);
        assert_eq!(message(&recorded, SSL_CERT), "Days left: 30");
        let days = gauge(&recorded, DAYS_LEFT).unwrap_or_default();
        assert!((30.0..30.01).contains(&days), "{days}");
        let seconds = gauge(&recorded, SECONDS_LEFT).unwrap_or_default();
        assert!((seconds - (30 * DAY + 60) as f64).abs() < 5.0, "{seconds}");
    }

    #[test]
    fn cert_with_10_days_left_is_warning() {
        let recorded = run(
            json!({"name": "s", "url": HTTPS_URL}),
            Ok(answer_with_cert(10 * DAY)),
        );
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Warning);
        assert_eq!(
            message(&recorded, SSL_CERT),
            "This cert is almost expired, only 10 days left"
        );
    }

    #[test]
    fn cert_with_3_days_left_is_critical() {
        let recorded = run(
            json!({"name": "s", "url": HTTPS_URL}),
            Ok(answer_with_cert(3 * DAY)),
        );
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Critical);
        assert_eq!(
            message(&recorded, SSL_CERT),
            "This cert TTL is critical: only 3 days before it expires"
        );
        assert_eq!(service_check(&recorded, CAN_CONNECT).status, Status::Ok);
    }

    #[test]
    fn custom_day_thresholds_apply() {
        let instance =
            json!({"name": "s", "url": HTTPS_URL, "days_warning": 40, "days_critical": 20});
        let recorded = run(instance, Ok(answer_with_cert(30 * DAY)));
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Warning);
    }

    #[test]
    fn second_thresholds_override_day_thresholds() {
        let instance = json!({
            "name": "s", "url": HTTPS_URL,
            "days_warning": 1, "days_critical": 1,
            "seconds_warning": 40 * DAY, "seconds_critical": 35 * DAY,
        });
        let recorded = run(instance, Ok(answer_with_cert(30 * DAY)));
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Critical);

        let instance =
            json!({"name": "s", "url": HTTPS_URL, "seconds_warning": 3600, "seconds_critical": 60});
        let recorded = run(instance, Ok(answer_with_cert(3 * DAY)));
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Ok);
    }

    #[test]
    fn expired_cert_is_critical_with_negative_days_when_not_verified() {
        let instance = json!({"name": "s", "url": HTTPS_URL, "tls_verify": false});
        let recorded = run(instance, Ok(answer_with_cert(-2 * DAY)));
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Critical);
        assert_eq!(
            message(&recorded, SSL_CERT),
            "This cert TTL is critical: only -2 days before it expires"
        );
    }

    #[test]
    fn tls_error_is_critical_for_can_connect_and_unknown_for_the_cert() {
        let recorded = run(
            json!({"name": "s", "url": HTTPS_URL}),
            Err(HttpError::Tls(
                "invalid peer certificate: UnknownIssuer".into(),
            )),
        );
        assert!(recorded.result.is_ok());
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
        assert!(message(&recorded, CAN_CONNECT).starts_with(
            "TLS error: invalid peer certificate: UnknownIssuer. Connection failed after "
        ));
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Unknown);
        assert_eq!(
            message(&recorded, SSL_CERT),
            "TLS error: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(gauge(&recorded, DAYS_LEFT), None);
    }

    #[test]
    fn tls_error_over_an_expired_cert_is_critical_with_zero_days_left() {
        let recorded = run(
            json!({"name": "s", "url": HTTPS_URL}),
            Err(HttpError::Tls("invalid peer certificate: Expired".into())),
        );
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Critical);
        assert_eq!(gauge(&recorded, DAYS_LEFT), Some(0.0));
        assert_eq!(gauge(&recorded, SECONDS_LEFT), Some(0.0));
    }

    #[test]
    fn connection_error_leaves_the_cert_unknown() {
        let recorded = run(
            json!({"name": "s", "url": HTTPS_URL}),
            Err(HttpError::Connect("no route to host".into())),
        );
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Unknown);
        assert_eq!(
            message(&recorded, SSL_CERT),
            "connection failed: no route to host"
        );
    }

    #[test]
    fn https_answer_without_a_certificate_expiry_leaves_the_cert_unknown() {
        let recorded = run(json!({"name": "s", "url": HTTPS_URL}), Ok(answer(200, "")));
        assert_eq!(service_check(&recorded, SSL_CERT).status, Status::Unknown);
        assert_eq!(
            message(&recorded, SSL_CERT),
            "Empty or no certificate found."
        );
    }

    #[test]
    fn certificate_is_not_checked_for_http_or_when_disabled() {
        let recorded = run(
            json!({"name": "s", "url": URL}),
            Ok(answer_with_cert(3 * DAY)),
        );
        assert!(recorded.service_check(SSL_CERT).is_none());
        assert_eq!(gauge(&recorded, DAYS_LEFT), None);

        let instance =
            json!({"name": "s", "url": HTTPS_URL, "check_certificate_expiration": false});
        let recorded = run(instance, Ok(answer_with_cert(3 * DAY)));
        assert!(recorded.service_check(SSL_CERT).is_none());
    }

    #[test]
    fn collect_response_time_false_skips_the_gauge() {
        let instance = json!({"name": "s", "url": URL, "collect_response_time": false});
        let recorded = run(instance, Ok(answer(200, "")));
        assert_eq!(gauge(&recorded, RESPONSE_TIME), None);
        assert_eq!(gauge(&recorded, CAN_CONNECT_GAUGE), Some(1.0));
    }

    #[test]
    fn defaults_are_get_10_seconds_verified_tls_and_redirects() {
        let recorded = run(json!({"name": "s", "url": URL}), Ok(answer(200, "")));
        let request = sent(&recorded);
        assert_eq!(request.method, "GET");
        assert_eq!(request.url, URL);
        assert_eq!(request.timeout_ms, 10_000);
        assert!(request.verify_tls);
        assert!(request.follow_redirects);
        assert_eq!(request.body, None);
        assert!(header(request, "User-Agent").is_some_and(|ua| ua.starts_with("Kennel/")));
    }

    #[test]
    fn request_carries_method_headers_timeout_tls_and_redirect_options() {
        let instance = json!({
            "name": "s", "url": URL, "method": "put", "timeout": 2.5,
            "headers": {"Authorization": "Bearer t", "X-Retries": 3, "user-agent": "probe"},
            "tls_verify": false, "allow_redirects": false,
        });
        let recorded = run(instance, Ok(answer(200, "")));
        let request = sent(&recorded);
        assert_eq!(request.method, "PUT");
        assert_eq!(request.timeout_ms, 2_500);
        assert!(!request.verify_tls);
        assert!(!request.follow_redirects);
        assert_eq!(header(request, "Authorization"), Some("Bearer t"));
        assert_eq!(header(request, "X-Retries"), Some("3"));
        assert_eq!(header(request, "User-Agent"), Some("probe"));
        let agents = request.headers.iter();
        assert_eq!(
            agents
                .filter(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
                .count(),
            1
        );
    }

    #[test]
    fn include_default_headers_false_sends_only_the_configured_headers() {
        let instance = json!({
            "name": "s", "url": URL, "include_default_headers": false, "headers": {"X-A": "1"},
        });
        let recorded = run(instance, Ok(answer(200, "")));
        assert_eq!(
            sent(&recorded).headers,
            vec![("X-A".to_owned(), "1".to_owned())]
        );
    }

    #[test]
    fn mapping_data_is_sent_as_json() {
        let instance = json!({"name": "s", "url": URL, "method": "post", "data": {"a": 1}});
        let recorded = run(instance, Ok(answer(200, "")));
        let request = sent(&recorded);
        assert_eq!(request.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(header(request, "Content-Type"), Some("application/json"));
    }

    #[test]
    fn string_data_is_sent_as_is_form_encoded() {
        let instance = json!({"name": "s", "url": URL, "method": "POST", "data": "a=1&b=2"});
        let recorded = run(instance, Ok(answer(200, "")));
        let request = sent(&recorded);
        assert_eq!(request.body.as_deref(), Some(&b"a=1&b=2"[..]));
        assert_eq!(
            header(request, "Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
    }

    #[test]
    fn configured_content_type_wins_over_the_data_default() {
        let instance = json!({
            "name": "s", "url": URL, "method": "post", "data": "<a/>",
            "headers": {"content-type": "text/xml"},
        });
        let recorded = run(instance, Ok(answer(200, "")));
        let request = sent(&recorded);
        assert_eq!(header(request, "Content-Type"), Some("text/xml"));
        let types = request.headers.iter();
        assert_eq!(
            types
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .count(),
            1
        );
    }

    #[test]
    fn data_is_not_sent_with_get_like_datadog() {
        let instance = json!({"name": "s", "url": URL, "data": {"a": 1}});
        let recorded = run(instance, Ok(answer(200, "")));
        let request = sent(&recorded);
        assert_eq!(request.body, None);
        assert_eq!(header(request, "Content-Type"), None);
    }

    #[test]
    fn legacy_disable_ssl_validation_turns_tls_verification_off() {
        let instance = json!({"name": "s", "url": HTTPS_URL, "disable_ssl_validation": true});
        let recorded = run(instance, Ok(answer_with_cert(30 * DAY)));
        assert!(!sent(&recorded).verify_tls);

        let both = json!({
            "name": "s", "url": HTTPS_URL, "disable_ssl_validation": true, "tls_verify": true,
        });
        let recorded = run(both, Ok(answer_with_cert(30 * DAY)));
        assert!(sent(&recorded).verify_tls, "tls_verify wins");
    }

    #[test]
    fn init_config_timeout_is_the_default_and_the_instance_timeout_wins() {
        let harness = |init: Value| {
            Harness::new()
                .init_config(init)
                .on_http(|_| Ok(answer(200, "")))
        };
        let recorded = harness(json!({"timeout": 3})).run::<HttpCheck>(json!({"url": URL}));
        assert_eq!(sent(&recorded).timeout_ms, 3_000);

        // The instance's `timeout` is the runner's (the run's deadline), handed over apart.
        let instance = json!({"url": URL, "timeout": 0.5});
        let recorded = harness(json!({"timeout": 3})).run::<HttpCheck>(instance);
        assert_eq!(sent(&recorded).timeout_ms, 500);

        let recorded = harness(Value::Null).run::<HttpCheck>(json!({"url": URL}));
        assert_eq!(sent(&recorded).timeout_ms, 10_000);
    }

    #[test]
    fn url_without_an_http_scheme_fails_the_run_and_reports_critical() {
        let recorded = run(
            json!({"name": "s", "url": "example.com"}),
            Ok(answer(200, "")),
        );
        let error = recorded.error();
        assert_eq!(
            error,
            "url: must start with http:// or https://, got \"example.com\""
        );
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
        assert_eq!(message(&recorded, CAN_CONNECT), error);
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).tags,
            vec!["url:example.com".to_owned(), "instance:s".to_owned()]
        );
        assert!(recorded.http_requests.is_empty());
    }

    #[test]
    fn missing_url_fails_the_run_naming_the_key() {
        let recorded = run(json!({"name": "s"}), Ok(answer(200, "")));
        assert_eq!(recorded.error(), "missing field `url`");
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).tags,
            vec!["instance:s"]
        );
    }

    #[test]
    fn invalid_content_match_regex_fails_the_run_naming_the_key() {
        let instance = json!({"name": "s", "url": URL, "content_match": "(unclosed"});
        let recorded = run(instance, Ok(answer(200, "")));
        let error = recorded.error();
        assert!(
            error.starts_with("content_match: not a valid regular expression: "),
            "{error}"
        );
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
        assert!(recorded.http_requests.is_empty());
    }

    #[test]
    fn invalid_status_code_regex_fails_the_run_naming_the_key() {
        let instance = json!({"name": "s", "url": URL, "http_response_status_code": "[2"});
        let recorded = run(instance, Ok(answer(200, "")));
        let error = recorded.error();
        assert!(
            error.starts_with("http_response_status_code: not a valid regular expression: "),
            "{error}"
        );
    }

    #[test]
    fn wrongly_typed_options_fail_the_run_naming_the_key_and_report_critical() {
        let cases = [
            (
                json!({"url": URL, "include_content": "maybe"}),
                "include_content: invalid value: string \"maybe\", expected true or false",
            ),
            (
                json!({"url": URL, "days_warning": -1}),
                "days_warning: must be a non-negative number, got -1",
            ),
            (
                json!({"url": URL, "headers": ["a"]}),
                "headers: invalid type: sequence, expected a mapping of header names to values",
            ),
            (
                json!({"url": URL, "headers": {"X-A": ["1"]}}),
                "headers.X-A: invalid type: sequence, expected a string",
            ),
            (
                json!({"url": URL, "data": [1]}),
                "data: invalid type: sequence, expected a mapping (sent as JSON) or a string",
            ),
            (
                json!({"url": ["x"]}),
                "url: invalid type: sequence, expected a string",
            ),
        ];
        for (instance, expected) in cases {
            let recorded = run(instance, Ok(answer(200, "")));
            let error = recorded.error();
            assert!(error.starts_with(expected), "{error}");
            assert_eq!(message(&recorded, CAN_CONNECT), error);
            assert!(recorded.http_requests.is_empty());
        }
        let recorded = Harness::new()
            .init_config(json!({"timeout": "soon"}))
            .run::<HttpCheck>(json!({"url": URL}));
        assert_eq!(
            recorded.error(),
            "init_config.timeout: invalid value: string \"soon\", expected a number"
        );
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
    }

    #[test]
    fn invalid_request_from_the_capability_fails_the_run() {
        let recorded = run(
            json!({"name": "s", "url": "http://exa mple.com"}),
            Err(HttpError::InvalidRequest("invalid URL".into())),
        );
        assert_eq!(recorded.error(), "invalid request: invalid URL");
        assert_eq!(
            service_check(&recorded, CAN_CONNECT).status,
            Status::Critical
        );
    }
}
