//! An HTTP server for unit tests of payflow's HTTP clients: it answers every request with the
//! same status and body, as a gateway, a proxy or a service's error page would.

/// Serves `body` as `content_type` with `status` (e.g. `404 Not Found`) to every request, on a
/// free port; its URL.
pub(crate) fn serve(
    status: &'static str,
    content_type: &'static str,
    body: &'static str,
) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            // The whole request (headers, then the body its length names) before the answer.
            let mut reader = BufReader::new(socket.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut request_body = vec![0; length];
            let _ = reader.read_exact(&mut request_body);
            let _ = write!(
                socket,
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}
