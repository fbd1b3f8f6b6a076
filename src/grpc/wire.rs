//! The part of Envoy's `CheckRequest` the adapter reads, decoded straight from the wire.
//!
//! Wire-compatible with `envoy.service.auth.v3.CheckRequest` (same field numbers and types), but
//! everything else is skipped unread: no `destination`, TLS session, metadata or body is
//! allocated, and the two `map<string, string>` fields are read as their wire form, a list of
//! entries, instead of a `HashMap` (hashing the headers was about 6.5k of the 168k instructions
//! a check executed; issue 14). Map semantics are kept by [`Entry::last`]: on the wire, a later
//! entry for the same key replaces an earlier one. The response is `envoy-types`' own
//! `CheckResponse`.

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `envoy.service.auth.v3.AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// `map<string, string> context_extensions`.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<Entry>,
}

/// `AttributeContext.Peer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

/// `envoy.config.core.v3.Address`: all three kinds, so that a later pipe or internal address
/// replaces a socket address as it does in the full message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(oneof = "AddressKind", tags = "1, 2, 3")]
    pub address: Option<AddressKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AddressKind {
    #[prost(message, tag = "1")]
    Socket(SocketAddress),
    #[prost(message, tag = "2")]
    Pipe(Skipped),
    #[prost(message, tag = "3")]
    Internal(Skipped),
}

/// `envoy.config.core.v3.SocketAddress`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
}

/// A message whose contents are not read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Skipped {}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(string, tag = "2")]
    pub method: String,
    /// `map<string, string> headers`: lower-case names, repeated headers joined with `,`.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Entry>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(string, tag = "5")]
    pub host: String,
    /// Raw headers, when Envoy is set to send them (`encode_raw_headers: true`).
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of a `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

// === impl Entry ===

impl Entry {
    /// The value a map would hold for `key`: the last entry's.
    pub fn last<'a>(entries: &'a [Entry], key: &str) -> Option<&'a str> {
        entries
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::service::auth::v3 as full;
    use full::attribute_context as ctx;
    use prost::Message;

    use super::*;

    fn socket(address: &str) -> core::Address {
        core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: address.into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(443)),
                ..Default::default()
            })),
        }
    }

    /// A request as Envoy sends it, with fields the adapter reads and fields it skips.
    fn full_request(raw: bool) -> full::CheckRequest {
        let headers: HashMap<String, String> = [
            ("cookie", "a=1; b=2"),
            ("user-agent", "curl/8"),
            ("x-forwarded-for", "203.0.113.9"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let header_map = raw.then(|| core::HeaderMap {
            headers: vec![
                core::HeaderValue {
                    key: "cookie".into(),
                    raw_value: b"a=1".to_vec(),
                    ..Default::default()
                },
                core::HeaderValue {
                    key: "cookie".into(),
                    raw_value: b"b=2".to_vec(),
                    ..Default::default()
                },
            ],
        });
        full::CheckRequest {
            attributes: Some(full::AttributeContext {
                source: Some(ctx::Peer {
                    address: Some(socket("198.51.100.7")),
                    principal: "spiffe://skipped".into(),
                    ..Default::default()
                }),
                destination: Some(ctx::Peer {
                    address: Some(socket("10.0.0.1")),
                    ..Default::default()
                }),
                request: Some(ctx::Request {
                    http: Some(ctx::HttpRequest {
                        id: "123".into(),
                        method: "POST".into(),
                        headers: if raw { HashMap::new() } else { headers },
                        header_map,
                        path: "/api/u1/tasks?x=1".into(),
                        host: "app.example.com".into(),
                        scheme: "https".into(),
                        body: "{\"skipped\": true}".into(),
                        raw_body: vec![0xff, 0xfe],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: [("route".to_owned(), "admin".to_owned())].into(),
                ..Default::default()
            }),
        }
    }

    fn slim(bytes: &[u8]) -> CheckRequest {
        CheckRequest::decode(bytes).expect("decodes")
    }

    #[test]
    fn reads_what_the_full_message_holds_and_nothing_else() {
        for raw in [false, true] {
            let full = full_request(raw);
            let read = slim(&full.encode_to_vec());
            let attributes = read.attributes.as_ref().unwrap();
            let http = attributes.request.as_ref().unwrap().http.as_ref().unwrap();
            let full_http = full.attributes.as_ref().unwrap().request.as_ref().unwrap();
            let full_http = full_http.http.as_ref().unwrap();
            assert_eq!(
                (http.method.as_str(), http.path.as_str(), http.host.as_str()),
                ("POST", "/api/u1/tasks?x=1", "app.example.com")
            );
            let headers: HashMap<String, String> = http
                .headers
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            assert_eq!(headers, full_http.headers, "raw: {raw}");
            let raw_cookies: Vec<&[u8]> = http
                .header_map
                .iter()
                .flat_map(|m| &m.headers)
                .map(|h| &h.raw_value[..])
                .collect();
            let want: Vec<&[u8]> = if raw { vec![b"a=1", b"b=2"] } else { vec![] };
            assert_eq!(raw_cookies, want);
            assert_eq!(
                Entry::last(&attributes.context_extensions, "route"),
                Some("admin")
            );
            let Some(AddressKind::Socket(source)) = attributes
                .source
                .as_ref()
                .and_then(|p| p.address.as_ref())
                .and_then(|a| a.address.as_ref())
            else {
                panic!("the source is a socket address");
            };
            assert_eq!(source.address, "198.51.100.7");
        }
    }

    #[test]
    fn a_later_map_entry_wins_as_in_the_map() {
        // Two entries for one key, on the wire: the full message keeps the last, and so do we.
        let http = HttpRequest {
            headers: vec![
                Entry {
                    key: "cookie".into(),
                    value: "first".into(),
                },
                Entry {
                    key: "cookie".into(),
                    value: "second".into(),
                },
            ],
            ..Default::default()
        };
        let bytes = http.encode_to_vec();
        let full = ctx::HttpRequest::decode(&bytes[..]).unwrap();
        assert_eq!(full.headers["cookie"], "second");
        let read = HttpRequest::decode(&bytes[..]).unwrap();
        assert_eq!(Entry::last(&read.headers, "cookie"), Some("second"));
        assert_eq!(Entry::last(&read.headers, "Cookie"), None, "keys are exact");
    }

    #[test]
    fn a_later_pipe_replaces_a_socket_address_as_in_the_full_message() {
        let mut bytes = socket("198.51.100.7").encode_to_vec();
        let pipe = core::Address {
            address: Some(core::address::Address::Pipe(core::Pipe {
                path: "/run/envoy.sock".into(),
                mode: 0,
            })),
        };
        bytes.extend(pipe.encode_to_vec());
        let full = core::Address::decode(&bytes[..]).unwrap();
        assert!(matches!(
            full.address,
            Some(core::address::Address::Pipe(_))
        ));
        let read = Address::decode(&bytes[..]).unwrap();
        assert!(matches!(read.address, Some(AddressKind::Pipe(_))));
    }

    #[test]
    fn a_read_string_that_is_not_utf8_fails_to_decode_like_the_full_message() {
        let mut bytes = HttpRequest {
            path: "/ok".into(),
            ..Default::default()
        }
        .encode_to_vec();
        // Field 4 (path), length-delimited, two bytes that are not UTF-8.
        bytes.extend([0x22, 0x02, 0xff, 0xfe]);
        assert!(ctx::HttpRequest::decode(&bytes[..]).is_err());
        assert!(HttpRequest::decode(&bytes[..]).is_err());
    }
}
