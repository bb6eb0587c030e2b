//! Lets every gRPC client talk to the driver's unix sockets, whatever `:authority` it sends.
//!
//! Many gRPC clients (kubelet's plugin watcher, Python's grpcio, grpc-java, C++) send the socket
//! *path* as the HTTP/2 `:authority` of a unix-socket call. That is not a valid URI authority, and
//! the HTTP/2 server under tonic (h2) resets every such stream with PROTOCOL_ERROR before a
//! service sees it: kubelet could not register the plugin, and those clients could not call even
//! GetPluginInfo. Each accepted connection therefore passes through a small relay that rewrites
//! an invalid `:authority` in the client's header blocks to `localhost` (what grpc-go sends for
//! unix sockets) and copies everything else unchanged. Only control traffic takes this path; no
//! volume data flows over these sockets.

use fluke_hpack::Decoder;
use fluke_hpack::encoder::encode_integer_into;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Every peer accepts frames this large (the protocol's minimum SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// Header blocks beyond this are refused: far above any gRPC call, well below memory trouble.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Frames beyond this are refused (the protocol's largest SETTINGS_MAX_FRAME_SIZE is 16 MiB).
const MAX_PAYLOAD: usize = 1 << 24;
/// The authority a unix-socket call stands for.
const LOCAL_AUTHORITY: &[u8] = b"localhost";
/// Buffer between the relay and the gRPC server.
const PIPE_BYTES: usize = 256 * 1024;

/// The connections of `listener`, each relayed through the authority fix: what a tonic server's
/// `serve_with_incoming` takes.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = io::Result<DuplexStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|accepted| accepted.map(relay))
}

/// Relays `client` through an authority-fixing pipe and returns the server's end of it.
pub fn relay(client: UnixStream) -> DuplexStream {
    let (server_end, relay_end) = tokio::io::duplex(PIPE_BYTES);
    let (client_read, mut client_write) = client.into_split();
    let (relay_read, relay_write) = tokio::io::split(relay_end);
    tokio::spawn(async move {
        let _ = forward_client_frames(client_read, relay_write).await;
    });
    tokio::spawn(async move {
        let mut relay_read = relay_read;
        let _ = tokio::io::copy(&mut relay_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    server_end
}

struct PendingBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// Copies the client's frames to `to`, rewriting header blocks whose `:authority` is invalid.
pub async fn forward_client_frames<R, W>(mut from: R, mut to: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: pass it on untouched and let the server refuse it.
        tokio::io::copy(&mut from, &mut to).await?;
        return to.shutdown().await;
    }
    let mut decoder = Decoder::new();
    let mut pending: Option<PendingBlock> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        if length > MAX_PAYLOAD {
            return Err(invalid("frame larger than 16 MiB"));
        }
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        from.read_exact(&mut payload).await?;
        match kind {
            FRAME_HEADERS => {
                if pending.is_some() {
                    return Err(invalid("HEADERS while a header block is open"));
                }
                let (priority, fragment) = headers_fragment(flags, &payload)?;
                pending = Some(PendingBlock {
                    stream,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    block: fragment.to_vec(),
                });
            }
            FRAME_CONTINUATION => {
                let block = pending
                    .as_mut()
                    .filter(|p| p.stream == stream)
                    .ok_or_else(|| invalid("CONTINUATION without its HEADERS"))?;
                block.block.extend_from_slice(&payload);
                if block.block.len() > MAX_HEADER_BLOCK {
                    return Err(invalid("header block larger than 1 MiB"));
                }
            }
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
                continue;
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            let block = pending.take().ok_or_else(|| invalid("no header block"))?;
            let headers = decoder
                .decode(&block.block)
                .map_err(|e| invalid(&format!("undecodable header block: {e:?}")))?;
            let encoded = encode_literal(&with_valid_authority(headers));
            write_header_block(&mut to, &block, &encoded).await?;
        }
    }
    to.shutdown().await
}

/// The header block fragment of a HEADERS payload, without padding, and its priority fields.
fn headers_fragment(flags: u8, payload: &[u8]) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut padding = 0usize;
    if flags & FLAG_PADDED != 0 {
        let (&pad, rest) = body
            .split_first()
            .ok_or_else(|| invalid("empty padded HEADERS"))?;
        padding = usize::from(pad);
        body = rest;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if body.len() < 5 {
            return Err(invalid("short HEADERS priority"));
        }
        let mut fields = [0u8; 5];
        fields.copy_from_slice(&body[..5]);
        priority = Some(fields);
        body = &body[5..];
    }
    if padding > body.len() {
        return Err(invalid("HEADERS padding longer than the frame"));
    }
    Ok((priority, &body[..body.len() - padding]))
}

/// The headers, with an invalid `:authority` replaced by `localhost`.
pub fn with_valid_authority(headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .into_iter()
        .map(|(name, value)| {
            if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
                (name, LOCAL_AUTHORITY.to_vec())
            } else {
                (name, value)
            }
        })
        .collect()
}

/// HPACK "literal header field without indexing, new name" for every header: no dynamic table,
/// so the server's decoder state cannot drift from ours whatever table size it advertises.
pub fn encode_literal(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0);
        for string in [name, value] {
            // A 7-bit length prefix with the Huffman bit clear; writing to a Vec cannot fail.
            let _ = encode_integer_into(string.len(), 7, 0, &mut out);
            out.extend_from_slice(string);
        }
    }
    out
}

async fn write_header_block<W: AsyncWrite + Unpin>(
    to: &mut W,
    block: &PendingBlock,
    encoded: &[u8],
) -> io::Result<()> {
    let priority_len = if block.priority.is_some() { 5 } else { 0 };
    let first_room = MAX_FRAME - priority_len;
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = 0;
    if block.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let mut payload = Vec::with_capacity(priority_len + first.len());
    if let Some(priority) = block.priority {
        payload.extend_from_slice(&priority);
    }
    payload.extend_from_slice(first);
    write_frame(to, FRAME_HEADERS, flags, block.stream, &payload).await?;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame(to, FRAME_CONTINUATION, flags, block.stream, chunk).await?;
        rest = tail;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    to.write_all(&frame(kind, flags, stream, payload)).await
}

/// One HTTP/2 frame: the 9-byte header (24-bit length, type, flags, stream) and the payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len();
    let mut bytes = Vec::with_capacity(9 + length);
    bytes.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/csi.v1.Identity/GetPluginInfo".to_vec(),
            ),
            (b":authority".to_vec(), authority.as_bytes().to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
        ]
    }

    fn authority(headers: &[(Vec<u8>, Vec<u8>)]) -> String {
        let (_, value) = headers.iter().find(|(n, _)| n == b":authority").unwrap();
        String::from_utf8(value.clone()).unwrap()
    }

    #[test]
    fn only_invalid_authorities_are_replaced() {
        let fixed = with_valid_authority(headers("/var/lib/kubelet/plugins/x/csi.sock"));
        assert_eq!(authority(&fixed), "localhost");
        for valid in ["localhost", "csi.sock", "127.0.0.1:9000"] {
            assert_eq!(authority(&with_valid_authority(headers(valid))), valid);
        }
    }

    #[test]
    fn literal_encoding_decodes_to_the_same_headers() {
        let original = headers("localhost");
        let decoded = Decoder::new().decode(&encode_literal(&original)).unwrap();
        assert_eq!(decoded, original);
    }

    /// Frames in, frames out: a HEADERS block split over a CONTINUATION, padded, with a
    /// Huffman-coded, dynamically indexed encoding (as real clients send) comes out as one valid
    /// block with the authority fixed; other frames pass unchanged.
    #[tokio::test]
    async fn header_blocks_are_rewritten_and_other_frames_pass() {
        let mut encoder = fluke_hpack::Encoder::new();
        let block = encoder.encode(
            headers("/run/csi.sock")
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        );
        let (part1, part2) = block.split_at(block.len() / 2);
        let mut input = PREFACE.to_vec();
        let settings = frame(0x4, 0, 0, &[]);
        input.extend_from_slice(&settings);
        let mut padded = vec![3u8];
        padded.extend_from_slice(part1);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(FRAME_HEADERS, FLAG_PADDED, 1, &padded));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, part2));
        let data = frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0");
        input.extend_from_slice(&data);

        let mut output = Vec::new();
        forward_client_frames(input.as_slice(), &mut output)
            .await
            .unwrap();
        assert_eq!(&output[..24], PREFACE);
        let rest = &output[24..];
        assert_eq!(&rest[..settings.len()], settings.as_slice());
        let rest = &rest[settings.len()..];
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        assert_eq!(rest[3], FRAME_HEADERS);
        assert_eq!(rest[4], FLAG_END_HEADERS);
        let decoded = Decoder::new().decode(&rest[9..9 + length]).unwrap();
        assert_eq!(authority(&decoded), "localhost");
        assert_eq!(decoded.len(), 5);
        assert_eq!(&rest[9 + length..], data.as_slice());
    }

    #[tokio::test]
    async fn a_continuation_without_headers_is_refused() {
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&[0, 0, 1, FRAME_CONTINUATION, FLAG_END_HEADERS, 0, 0, 0, 1, 0]);
        let mut output = Vec::new();
        let error = forward_client_frames(input.as_slice(), &mut output)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
