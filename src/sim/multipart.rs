//! A `multipart/form-data` reader (RFC 7578) for the upload APIs, over a body already in
//! memory: the parts' names, file names and bytes, borrowed from the body.

use super::error::SimError;
use http::{HeaderMap, header};

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part<'a> {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// The `filename`, for a file.
    pub filename: Option<String>,
    /// Its content, exactly as sent.
    pub data: &'a [u8],
}

/// The boundary of a `multipart/form-data` request, from its `Content-Type`.
pub(crate) fn boundary(headers: &HeaderMap) -> Result<String, SimError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut params = ct.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(SimError::bad(format!(
            "expected a multipart/form-data upload, got Content-Type {ct:?}"
        )));
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| SimError::bad("the multipart Content-Type has no boundary"))
}

/// The parts of `body`, a form delimited by `boundary`.
pub(crate) fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, SimError> {
    let delimiter = format!("--{boundary}");
    let next_part = format!("\r\n--{boundary}");
    let start = find(body, delimiter.as_bytes())
        .ok_or_else(|| SimError::bad("the multipart body has no boundary line"))?;
    let mut rest = &body[start + delimiter.len()..];
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| SimError::bad("malformed multipart boundary line"))?;
        let head_end = find(rest, b"\r\n\r\n")
            .ok_or_else(|| SimError::bad("a multipart part has no header end"))?;
        let head = std::str::from_utf8(&rest[..head_end])
            .map_err(|_| SimError::bad("multipart part headers are not UTF-8"))?;
        let content = &rest[head_end + 4..];
        let end = find(content, next_part.as_bytes())
            .ok_or_else(|| SimError::bad("the multipart body ends before its closing boundary"))?;
        let (name, filename) = disposition(head)?;
        out.push(Part {
            name,
            filename,
            data: &content[..end],
        });
        rest = &content[end + next_part.len()..];
    }
}

/// `name` and `filename` of a part's `Content-Disposition: form-data` header.
fn disposition(head: &str) -> Result<(String, Option<String>), SimError> {
    let value = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
        .map(|(_, v)| v)
        .ok_or_else(|| SimError::bad("a multipart part has no Content-Disposition"))?;
    let param = |key: &str| {
        value
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    };
    let name = param("name").ok_or_else(|| SimError::bad("a multipart part has no name"))?;
    Ok((name, param("filename")))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"preamble\r\n--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
        --xyz\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\ncontent-type: audio/wav\r\n\r\n\
        RIFF\r\n--xy\x00\xff\r\n--xyz--\r\n";

    #[test]
    fn parts_come_out_with_their_exact_bytes() {
        let parts = parts(BODY, "xyz").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].data),
            ("model", &b"whisper-1"[..])
        );
        assert_eq!(parts[1].filename.as_deref(), Some("a.wav"));
        assert_eq!(parts[1].data, b"RIFF\r\n--xy\x00\xff");
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=\"a b\"".parse().unwrap(),
        );
        assert_eq!(boundary(&h).unwrap(), "a b");
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(boundary(&h).is_err());
        h.insert(header::CONTENT_TYPE, "multipart/form-data".parse().unwrap());
        assert!(boundary(&h).is_err());
    }

    #[test]
    fn truncated_or_malformed_forms_are_refused() {
        for body in [
            &b"no boundary here"[..],
            b"--xyz\r\nname: x\r\n\r\ndata\r\n--xyz--",
            b"--xyz\r\ncontent-disposition: form-data; name=\"f\"\r\n\r\ndata",
            b"--xyzjunk",
        ] {
            assert!(
                parts(body, "xyz").is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parts(b"--xyz--\r\n", "xyz").unwrap(), vec![]);
    }
}
