//! The tonic service for `envoy.service.auth.v3.Authorization/Check`, written out instead of
//! `envoy-types`' generated `AuthorizationServer` so that the request decodes into the slim
//! [`wire::CheckRequest`] (issue 14). Otherwise what the generated server does: one unary
//! method, `UNIMPLEMENTED` for any other path, no compression, tonic's default message limits.
//!
//! Generic over the [`Checker`] that answers, so that the benchmark's floor server
//! (`examples/floor.rs`) is served by exactly this code.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use envoy_types::ext_authz::v3::pb::CheckResponse;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic_prost::ProstCodec;

use super::wire;

/// The method's path.
const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// What answers a `Check`: every decision, deny included, is an answer, never a gRPC error.
pub trait Checker: Clone + Send + Sync + 'static {
    /// Boxed: the answer's future is large (better-authz's is several KiB) and tonic moves the
    /// future it is given several times; behind a box only the pointer moves (callgrind: 11k
    /// instructions of `memcpy` per check more without it).
    fn check(&self, request: wire::CheckRequest) -> Answer;
}

/// A [`Checker`]'s answer to come.
pub type Answer = Pin<Box<dyn Future<Output = CheckResponse> + Send + 'static>>;

/// `envoy.service.auth.v3.Authorization`, answered by `C` ([`super::ExtAuthz`] in the service).
#[derive(Clone)]
pub struct AuthorizationService<C>(pub C);

impl<C: Checker> NamedService for AuthorizationService<C> {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<C: Checker, B> Service<http::Request<B>> for AuthorizationService<C>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK {
            return Box::pin(async { Ok(unimplemented()) });
        }
        let method = Check(self.0.clone());
        Box::pin(async move {
            let codec = ProstCodec::<CheckResponse, wire::CheckRequest>::default();
            Ok(Grpc::new(codec).unary(method, request).await)
        })
    }
}

/// The unary method.
struct Check<C>(C);

impl<C: Checker> UnaryService<wire::CheckRequest> for Check<C> {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<wire::CheckRequest>) -> Self::Future {
        let answer = self.0.check(request.into_inner());
        Box::pin(async move { Ok(tonic::Response::new(answer.await)) })
    }
}

/// `UNIMPLEMENTED`, as a gRPC answer, for any other method.
fn unimplemented() -> http::Response<Body> {
    let mut response = http::Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert(
        tonic::Status::GRPC_STATUS,
        (tonic::Code::Unimplemented as i32).into(),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}
