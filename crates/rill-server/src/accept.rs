//! `Accept` negotiation (RFC 9110 §12.5.1): q-values first, then the most specific matching
//! range, then the server's order of preference.

/// Which of `offered` (media types, most preferred first) the client wants: the index of the
/// one with the highest quality, the earliest on ties. A missing or empty header accepts
/// anything (the first). `None` when the client accepts none of them (every match has `q=0`).
pub(crate) fn negotiate(accept: &str, offered: &[&str]) -> Option<usize> {
    if accept.trim().is_empty() {
        return (!offered.is_empty()).then_some(0);
    }
    let ranges: Vec<Range<'_>> = accept.split(',').filter_map(Range::parse).collect();
    let mut best: Option<(usize, u16)> = None;
    for (index, media) in offered.iter().enumerate() {
        let Some((kind, sub)) = media.split_once('/') else {
            continue;
        };
        // The most specific range that matches decides this type's quality.
        let quality = ranges
            .iter()
            .filter(|r| r.matches(kind, sub))
            .max_by_key(|r| r.specificity())
            .map_or(0, |r| r.q);
        if quality > 0 && best.is_none_or(|(_, q)| quality > q) {
            best = Some((index, quality));
        }
    }
    best.map(|(index, _)| index)
}

/// One media range with its quality in thousandths.
struct Range<'a> {
    kind: &'a str,
    sub: &'a str,
    q: u16,
}

impl<'a> Range<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let mut params = text.split(';');
        let media = params.next()?.trim();
        let (kind, sub) = media.split_once('/')?;
        let (kind, sub) = (kind.trim(), sub.trim());
        if kind.is_empty() || sub.is_empty() || (kind == "*" && sub != "*") {
            return None;
        }
        let mut q = 1000;
        for param in params {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                q = parse_q(value.trim())?;
            }
        }
        Some(Range { kind, sub, q })
    }

    fn matches(&self, kind: &str, sub: &str) -> bool {
        (self.kind == "*" || self.kind.eq_ignore_ascii_case(kind))
            && (self.sub == "*" || self.sub.eq_ignore_ascii_case(sub))
    }

    fn specificity(&self) -> u8 {
        match (self.kind, self.sub) {
            ("*", _) => 0,
            (_, "*") => 1,
            _ => 2,
        }
    }
}

/// `q` is `0`, `1`, or up to three decimals: returned in thousandths; a malformed one drops
/// the range (RFC 9110 grammar: `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`).
fn parse_q(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in fraction.bytes().enumerate() {
        let place = [100, 10, 1][i];
        thousandths += u16::from(digit - b'0') * place;
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

    const OFFERED: &[&str] = &["application/json", "text/event-stream", "text/plain"];

    #[test]
    fn table() {
        let cases: &[(&str, Option<usize>)] = &[
            ("", Some(0)),
            ("*/*", Some(0)),
            ("text/event-stream", Some(1)),
            ("text/plain", Some(2)),
            ("TEXT/Event-Stream", Some(1)),
            // axios's default: JSON is listed first and nothing outranks it.
            ("application/json, text/plain, */*", Some(0)),
            ("text/event-stream;q=0.5, application/json", Some(0)),
            ("text/event-stream;q=0.5, */*;q=0.1", Some(1)),
            ("text/*", Some(1)),
            ("text/*, text/plain;q=0.9", Some(1)),
            ("text/plain;q=0, */*", Some(0)),
            ("image/png", None),
            ("text/event-stream;q=0", None),
            ("text/event-stream;q=2, text/plain", Some(2)),
            ("text/event-stream;q=0.333", Some(1)),
            ("garbage, text/plain", Some(2)),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(accept, OFFERED), *want, "{accept:?}");
        }
    }
}
