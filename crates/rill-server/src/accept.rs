//! `Accept` negotiation (RFC 9110 §12.5.1): which of the representations a route can produce
//! the client prefers.
//!
//! The order of preference is: the client's quality value (`q`), then how specifically the
//! client named the type (`text/plain` beats `text/*`, which beats `*/*`), then the route's own
//! order. So `application/json, text/plain, */*` (axios's default) picks JSON on a route that
//! lists JSON first, and `text/event-stream;q=0.5, application/json` picks JSON, whatever the
//! order of the header. A missing, empty or unreadable `Accept`, or one that only says `*/*`,
//! gets the route's first offer: its default.
//!
//! Pure functions, no allocation: the header is parsed in place every time, which for the few
//! ranges a real `Accept` carries costs less than building anything.

use axum::http::{HeaderMap, header};

/// The offer of `offers` (bare `type/subtype` media types, lowercase, in the route's order of
/// preference; the first is the default) that the `Accept` headers in `headers` prefer, or
/// `None` when the client accepts none of them (every offer has `q=0` or matches no range).
///
/// Several `Accept` headers count as one list (RFC 9110 §5.3).
pub(crate) fn negotiate<'a>(headers: &HeaderMap, offers: &[&'a str]) -> Option<&'a str> {
    // Values that are not visible ASCII are treated as absent, and so are malformed ranges:
    // a header without one well-formed range says nothing, and gets the default.
    let values = || {
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
    };
    let says_anything = values()
        .flat_map(|v| v.split(','))
        .any(|range| parse_range(range).is_some());
    if !says_anything {
        return offers.first().copied();
    }
    let mut best: Option<(Rank, usize)> = None;
    for (index, offer) in offers.iter().enumerate() {
        let rank = values()
            .filter_map(|value| rank_in(value, offer))
            .reduce(|a, b| if b.specificity > a.specificity { b } else { a });
        let Some(rank) = rank.filter(|r| r.quality > 0) else {
            continue;
        };
        // Strictly better only: on a tie the earlier offer (the route's preference) stays.
        if best.is_none_or(|(b, _)| (rank.quality, rank.specificity) > (b.quality, b.specificity)) {
            best = Some((rank, index));
        }
    }
    best.and_then(|(_, index)| offers.get(index).copied())
}

/// [`negotiate`], falling back to the route's default (`offers[0]`) when the client accepts
/// none of the offers: RFC 9110 §12.5.1 lets a server disregard the header rather than answer
/// `406`, and an answer the client can at least read beats none.
///
/// # Panics
///
/// When `offers` is empty (a programmer error: a route produces at least one representation).
pub(crate) fn negotiate_or_default<'a>(headers: &HeaderMap, offers: &[&'a str]) -> &'a str {
    negotiate(headers, offers).unwrap_or(offers[0])
}

/// How a media range of `Accept` applies to an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rank {
    /// Thousandths: `q=0.5` is 500 (integers, so `0.3` compares exactly).
    quality: u16,
    /// 1 for `*/*`, 2 for `type/*`, 3 for `type/subtype`, 4 with parameters (RFC 9110's rule:
    /// the most specific range that matches decides an offer's quality).
    specificity: u8,
}

/// The rank the most specific range of `accept` that matches `offer` gives it.
fn rank_in(accept: &str, offer: &str) -> Option<Rank> {
    let (offer_type, offer_sub) = offer.split_once('/')?;
    let mut best: Option<Rank> = None;
    for range in accept.split(',') {
        let Some((media, quality, has_params)) = parse_range(range) else {
            continue;
        };
        let Some((ty, sub)) = media.split_once('/') else {
            continue;
        };
        let specificity = match (ty, sub) {
            ("*", "*") => 1,
            (t, "*") if t.eq_ignore_ascii_case(offer_type) => 2,
            (t, s) if t.eq_ignore_ascii_case(offer_type) && s.eq_ignore_ascii_case(offer_sub) => {
                if has_params {
                    4
                } else {
                    3
                }
            }
            _ => continue,
        };
        if best.is_none_or(|b| specificity > b.specificity) {
            best = Some(Rank {
                quality,
                specificity,
            });
        }
    }
    best
}

/// One media range: `type/subtype`, its quality (1000 when absent) and whether it has other
/// parameters. `None` for an empty or malformed element (skipped, as if absent). Parameters
/// other than `q` do not restrict the match: the representations a route offers have no
/// parameter a client could ask to differ (`charset` is always UTF-8).
fn parse_range(range: &str) -> Option<(&str, u16, bool)> {
    let mut parts = range.split(';');
    let media = parts.next()?.trim();
    let (ty, sub) = media.split_once('/')?;
    if ty.is_empty() || sub.is_empty() || (ty == "*" && sub != "*") {
        return None;
    }
    let mut quality = 1000;
    let mut has_params = false;
    for param in parts {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            quality = parse_quality(value.trim())?;
            // Anything after `q` is an accept extension, not a media type parameter.
            break;
        }
        has_params = true;
    }
    Some((media, quality, has_params))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_quality(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in fraction.bytes().enumerate() {
        let scale = [100, 10, 1][i];
        thousandths += u16::from(digit - b'0') * scale;
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The chat routes' offers: the 202 JSON first (the default), then SSE, then plain text.
    const CHAT: &[&str] = &["application/json", "text/event-stream", "text/plain"];

    #[track_caller]
    fn check(accept: &[&str], offers: &[&'static str], expected: Option<&str>) {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(
                header::ACCEPT,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        assert_eq!(negotiate(&headers, offers), expected, "Accept: {accept:?}");
    }

    #[test]
    fn table() {
        let json = Some("application/json");
        let sse = Some("text/event-stream");
        let plain = Some("text/plain");
        // No preference: the route's default.
        check(&[], CHAT, json);
        check(&["*/*"], CHAT, json);
        check(&[""], CHAT, json);
        check(&[" , "], CHAT, json);
        // One type.
        check(&["text/event-stream"], CHAT, sse);
        check(&["text/plain"], CHAT, plain);
        check(&["application/json"], CHAT, json);
        // axios's default: JSON is named exactly, like text/plain; the route's order decides.
        check(&["application/json, text/plain, */*"], CHAT, json);
        // fetch-event-source, with a fallback.
        check(&["text/event-stream, */*;q=0.1"], CHAT, sse);
        // q-values beat the header's order and the route's order.
        check(&["text/event-stream;q=0.5, application/json"], CHAT, json);
        check(&["application/json;q=0.4, text/plain;q=0.9"], CHAT, plain);
        check(&["text/plain;q=0.5, */*;q=0.9"], CHAT, json);
        // An exact range beats a wildcard at the same quality, whatever the order.
        check(&["*/*, text/plain"], CHAT, plain);
        check(&["text/*, text/plain"], CHAT, plain);
        // text/* picks the route's first text type.
        check(&["text/*"], CHAT, sse);
        // The most specific range decides an offer's quality: JSON is refused here.
        check(&["application/json;q=0, */*"], CHAT, sse);
        check(&["text/*;q=0, application/*"], CHAT, json);
        // Nothing acceptable.
        check(&["image/png"], CHAT, None);
        check(
            &["text/event-stream;q=0, application/json;q=0, text/plain;q=0"],
            CHAT,
            None,
        );
        // Case, spacing, parameters and several headers.
        check(&["TEXT/Event-Stream ; Q=1"], CHAT, sse);
        check(&["text/event-stream; charset=utf-8"], CHAT, sse);
        check(
            &["text/plain;format=flowed;q=0.8, text/plain;q=0.1"],
            CHAT,
            plain,
        );
        check(&["image/png", "text/plain"], CHAT, plain);
        check(&["text/plain;q=0.2", "text/event-stream;q=0.3"], CHAT, sse);
        // Malformed elements are skipped, not fatal.
        check(&["text/plain;q=2, text/event-stream"], CHAT, sse);
        check(&["*/plain, text/event-stream;q=0.2"], CHAT, sse);
        check(&["text/plain;q=abc"], CHAT, json);
        check(&["text, application/json"], CHAT, json);
    }

    #[test]
    fn unreadable_header_is_the_default() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_bytes(b"text/plain\xff").expect("opaque bytes are a value"),
        );
        assert_eq!(negotiate(&headers, CHAT), Some("application/json"));
        assert_eq!(negotiate_or_default(&headers, CHAT), "application/json");
    }

    #[test]
    fn qvalues() {
        for (text, q) in [
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.001", Some(1)),
            ("1.001", None),
            ("0.0001", None),
            ("2", None),
            ("-1", None),
            ("", None),
            (".5", None),
            ("0.x", None),
        ] {
            assert_eq!(parse_quality(text), q, "{text:?}");
        }
    }
}
