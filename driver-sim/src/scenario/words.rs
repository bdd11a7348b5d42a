//! Small parsers and printers shared by the scenario runner.

use super::*;

pub(super) fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

pub(super) fn errno_name(e: Errno) -> String {
    match e {
        Errno::EAGAIN => "EAGAIN".into(),
        Errno::EBADF => "EBADF".into(),
        Errno::EPIPE => "EPIPE".into(),
        Errno::ECONNRESET => "ECONNRESET".into(),
        Errno::ECONNREFUSED => "ECONNREFUSED".into(),
        Errno::EADDRINUSE => "EADDRINUSE".into(),
        Errno::EINPROGRESS => "EINPROGRESS".into(),
        Errno::EMFILE => "EMFILE".into(),
        Errno::EPERM => "EPERM".into(),
        e => format!("E{}", e.0),
    }
}

pub(super) fn match_words(words: &[&str], summary: &str) -> Result<(), String> {
    if words == ["*"] {
        return Ok(());
    }
    let lower = summary.to_ascii_lowercase();
    let have: Vec<&str> = lower.split_whitespace().collect();
    let mut i = 0;
    for w in words {
        let w = w.to_ascii_lowercase();
        match have[i..].iter().position(|h| *h == w) {
            Some(p) => i += p + 1,
            None => return Err(format!("`{w}` not found in order")),
        }
    }
    Ok(())
}

/// Parses packetdrill flags (`S`, `S.`, `.`, `F.`, `R`, `P.`).
pub(super) fn parse_flags(s: &str) -> Result<u8, String> {
    let mut f = 0;
    for c in s.chars() {
        f |= match c {
            'S' => flags::SYN,
            'F' => flags::FIN,
            'R' => flags::RST,
            'P' => flags::PSH,
            'U' => flags::URG,
            '.' => flags::ACK,
            _ => return Err(format!("bad flags `{s}`")),
        };
    }
    if s.is_empty() {
        return Err("no flags".into());
    }
    Ok(f)
}

/// Parses `start:end(len)`.
pub(super) fn parse_seq(s: &str) -> Result<(u32, u32, u32), String> {
    let (a, rest) = s.split_once(':').ok_or_else(|| format!("bad seq `{s}`"))?;
    let (b, rest) = rest
        .split_once('(')
        .ok_or_else(|| format!("bad seq `{s}`"))?;
    let l = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("bad seq `{s}`"))?;
    let p = |x: &str| x.parse::<u32>().map_err(|_| format!("bad seq `{s}`"));
    let (a, b, l) = (p(a)?, p(b)?, p(l)?);
    if b.wrapping_sub(a) != l {
        return Err(format!("seq `{s}`: end - start != len"));
    }
    Ok((a, b, l))
}
