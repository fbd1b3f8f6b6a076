//! Organization membership: the organization plugin's `GET /organization/list-members`, asked
//! as the caller and filtered to the caller (`filterField=userId`), so that the answer names
//! both the organization and the member. Chosen over `get-active-member-role` (its answer is a
//! bare role, naming neither) and `get-full-organization` (asked about an organization the
//! caller is not in, it clears the session's active organization). Read-only, no side effects.
//!
//! Answers: 200 with the caller's member record → a member with that role; 403
//! `YOU_ARE_NOT_A_MEMBER_OF_THIS_ORGANIZATION` or 400 `ORGANIZATION_NOT_FOUND` → not a member;
//! 401 → no session; 429 and 5xx → unavailable; anything else → a bad answer.

use serde::Deserialize;

use super::{BetterAuthClient, BodyError, MAX_BODY_BYTES, read_bounded, uri};
use crate::decision::{OrgLookup, OrgQuery};
use crate::reason::Detail;
use crate::routes::OrgRef;

#[derive(Deserialize)]
struct Members {
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    #[serde(rename = "organizationId")]
    organization_id: String,
    #[serde(rename = "userId")]
    user_id: String,
    role: Role,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Role {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
}

// === impl BetterAuthClient ===

impl BetterAuthClient {
    /// The caller's membership in `query.org`, within the client's deadline.
    pub async fn membership(
        &self,
        query: &OrgQuery,
        trace: &[(&'static str, String)],
    ) -> OrgLookup {
        match tokio::time::timeout(self.timeout, self.ask_membership(query, trace)).await {
            Ok(lookup) => lookup,
            Err(_elapsed) => OrgLookup::Unavailable(Detail::UpstreamTimeout),
        }
    }

    async fn ask_membership(
        &self,
        query: &OrgQuery,
        trace: &[(&'static str, String)],
    ) -> OrgLookup {
        let mut url = self.uris.members.clone();
        {
            // Encoded by the URL's query serialiser: a segment can add no parameter.
            let mut pairs = url.query_pairs_mut();
            match &query.org {
                OrgRef::Id(id) => pairs.append_pair("organizationId", id),
                OrgRef::Slug(slug) => pairs.append_pair("organizationSlug", slug),
            };
            pairs
                .append_pair("filterField", "userId")
                .append_pair("filterValue", &query.user_id)
                .append_pair("limit", "1");
        }
        let Some(request) = uri(&url)
            .ok()
            .and_then(|uri| self.request_as(uri, &query.session, trace))
        else {
            return OrgLookup::BadAnswer;
        };
        let response = match self.http.send(request).await {
            Ok(response) => response,
            Err(detail) => return OrgLookup::Unavailable(detail),
        };
        let status = response.status().as_u16();
        let body = match read_bounded(response, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return OrgLookup::BadAnswer,
            Err(BodyError::Read) => return OrgLookup::Unavailable(Detail::UpstreamUnreachable),
        };
        let lookup = parse_members(status, &body, query);
        if lookup == OrgLookup::BadAnswer {
            tracing::warn!(
                status,
                "Better Auth list-members answered something that is not a membership \
                 (is the organization plugin enabled?)"
            );
        }
        lookup
    }
}

/// A `list-members` answer as a membership of `query.user_id` in `query.org`.
pub fn parse_members(status: u16, body: &[u8], query: &OrgQuery) -> OrgLookup {
    let code = || {
        serde_json::from_slice::<ErrorBody>(body)
            .map(|e| e.code)
            .unwrap_or_default()
    };
    match status {
        200 => {}
        401 => return OrgLookup::NoSession,
        403 => return OrgLookup::NotMember,
        400 if code() == "ORGANIZATION_NOT_FOUND" => return OrgLookup::NotMember,
        429 => return OrgLookup::Unavailable(Detail::UpstreamRateLimited),
        500..=599 => return OrgLookup::Unavailable(Detail::UpstreamServerError),
        _ => return OrgLookup::BadAnswer,
    }
    let Ok(answer) = serde_json::from_slice::<Members>(body) else {
        return OrgLookup::BadAnswer;
    };
    let names_org = |m: &Member| match &query.org {
        OrgRef::Id(id) => m.organization_id == *id,
        // A slug is resolved by Better Auth; the record must still name an organization.
        OrgRef::Slug(_) => !m.organization_id.is_empty(),
    };
    let mine = answer
        .members
        .into_iter()
        .find(|m| m.user_id == query.user_id && names_org(m));
    match mine {
        Some(member) => OrgLookup::Member {
            role: match member.role {
                Role::One(list) => list,
                Role::Many(list) => list.join(","),
            },
        },
        // Filtered to the caller, yet not them: not an answer about this membership.
        None => OrgLookup::NotMember,
    }
}

#[cfg(test)]
mod tests;
