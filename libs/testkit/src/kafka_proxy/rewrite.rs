//! The protocol rewriter: broker answers on their way to the client, with Metadata and
//! FindCoordinator naming the proxy's ports and ApiVersions offering SASL.

use super::*;

/// Broker to client: Metadata answers name the proxy's ports, ApiVersions answers offer
/// SASL when the proxy serves it; everything else passes.
pub(super) async fn responses<R>(
    mut r: R,
    w: Writer,
    pending: Pending,
    ports: &HashMap<i32, i32>,
    advertise_sasl: bool,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
{
    while let Some(frame) = read_frame(&mut r).await? {
        let correlation = frame
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(-1);
        let request = pending.lock().expect("pending lock").remove(&correlation);
        let frame = match request {
            Some((METADATA, version)) => rewrite_metadata(frame, version, ports)?,
            Some((FIND_COORDINATOR, version)) => rewrite_coordinator(frame, version, ports)?,
            Some((API_VERSIONS, version)) if advertise_sasl => offer_sasl(frame, version),
            _ => frame,
        };
        write_frame(&mut *w.lock().await, &frame).await?;
    }
    Ok(())
}

/// ApiVersions with SaslHandshake (v0–1) and SaslAuthenticate (v0–2) added. An answer that
/// does not decode at the asked version (an UNSUPPORTED_VERSION answer is v0) passes.
pub(super) fn offer_sasl(frame: Vec<u8>, version: i16) -> Vec<u8> {
    let rewrite = || -> anyhow::Result<Vec<u8>> {
        let mut buf = Bytes::from(frame.clone());
        let header_version = ApiVersionsResponse::header_version(version);
        let header = ResponseHeader::decode(&mut buf, header_version)?;
        let mut resp = ApiVersionsResponse::decode(&mut buf, version)?;
        anyhow::ensure!(resp.error_code == 0, "an error answer");
        for (key, max) in [(SASL_HANDSHAKE, 1), (SASL_AUTHENTICATE, 2)] {
            resp.api_keys.retain(|k| k.api_key != key);
            resp.api_keys.push(
                ApiVersion::default()
                    .with_api_key(key)
                    .with_min_version(0)
                    .with_max_version(max),
            );
        }
        let mut out = BytesMut::new();
        header.encode(&mut out, header_version)?;
        resp.encode(&mut out, version)?;
        Ok(out.to_vec())
    };
    rewrite().unwrap_or(frame)
}

pub(super) fn rewrite_metadata(
    frame: Vec<u8>,
    version: i16,
    ports: &HashMap<i32, i32>,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = Bytes::from(frame);
    let header_version = MetadataResponse::header_version(version);
    let header = ResponseHeader::decode(&mut buf, header_version)?;
    let mut resp = MetadataResponse::decode(&mut buf, version)?;
    for b in &mut resp.brokers {
        if let Some(p) = ports.get(&b.port) {
            b.port = *p;
        }
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version)?;
    resp.encode(&mut out, version)?;
    Ok(out.to_vec())
}

pub(super) fn rewrite_coordinator(
    frame: Vec<u8>,
    version: i16,
    ports: &HashMap<i32, i32>,
) -> anyhow::Result<Vec<u8>> {
    let mut buf = Bytes::from(frame);
    let header_version = FindCoordinatorResponse::header_version(version);
    let header = ResponseHeader::decode(&mut buf, header_version)?;
    let mut resp = FindCoordinatorResponse::decode(&mut buf, version)?;
    if let Some(p) = ports.get(&resp.port) {
        resp.port = *p;
    }
    for c in &mut resp.coordinators {
        if let Some(p) = ports.get(&c.port) {
            c.port = *p;
        }
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version)?;
    resp.encode(&mut out, version)?;
    Ok(out.to_vec())
}
