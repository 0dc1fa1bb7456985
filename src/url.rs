//! The little of URLs that redirects need: an absolute URL's origin, and
//! a `Location` resolved against the URL it answered.

/// `scheme://host[:port]` of an absolute URL, lowercased; None for one
/// with user information or no host.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}

/// `location` (absolute, scheme-relative, absolute-path or relative)
/// resolved against `from`.
pub fn resolve(from: &str, location: &str) -> Option<String> {
    if location.contains("://") {
        return Some(location.to_string());
    }
    if let Some(rest) = location.strip_prefix("//") {
        let (scheme, _) = from.split_once("://")?;
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{}{location}", origin(from)?));
    }
    let path_start = from.split_once("://")?.0.len() + 3;
    let dir_end = from[path_start..].rfind('/').map(|i| path_start + i + 1)?;
    Some(format!("{}{location}", &from[..dir_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        let from = "http://Reg.example:5000/v2/os/blobs/sha256:ab";
        assert_eq!(origin(from).unwrap(), "http://reg.example:5000");
        assert_eq!(origin("http://user@evil/x"), None);
        assert_eq!(resolve(from, "/x").unwrap(), "http://reg.example:5000/x");
        assert_eq!(
            resolve(from, "other").unwrap(),
            "http://Reg.example:5000/v2/os/blobs/other"
        );
        assert_eq!(resolve(from, "//cdn/y").unwrap(), "http://cdn/y");
        assert_eq!(resolve(from, "https://cdn/z").unwrap(), "https://cdn/z");
    }
}
