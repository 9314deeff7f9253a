//! `taskcell connect HOST PORT`: inside a `proxy` cell, open a tunnel through the HTTP
//! proxy's CONNECT and join it to stdin/stdout (an ssh `ProxyCommand`).

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Connect through the proxy at `proxy` (`127.0.0.1:3128` in a cell). Returns the exit code.
pub fn run(proxy: &str, host: &str, port: u16) -> io::Result<()> {
    let mut s = TcpStream::connect(proxy).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the proxy at {proxy}: {e} (run this inside a cell with network mode `proxy`)"),
        )
    })?;
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())?;
    // Read the response head byte by byte so that no tunnel byte is consumed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > super::http::MAX_HEAD || s.read(&mut b)? == 0 {
            return Err(io::Error::other("the proxy closed the connection"));
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        // The body says which rule refused.
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        return Err(io::Error::other(format!(
            "{authority}: {} {}",
            text.lines().next().unwrap_or(""),
            body.trim()
        )));
    }
    let mut up = s.try_clone()?;
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut up);
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    let mut out = io::stdout().lock();
    let _ = io::copy(&mut s, &mut out);
    let _ = out.flush();
    drop(t);
    Ok(())
}
