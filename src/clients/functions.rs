//! OCI Functions, asked two things: this function's invoke endpoint (`GetFunction`, field
//! `invokeEndpoint`, asked once per process and cached: Oracle documents that it never changes for
//! the life of the function) and a detached invocation of this same function
//! (`POST {invoke endpoint}/20181201/functions/{FN_FN_ID}/actions/invoke` with
//! `fn-invoke-type: detached`), which is how a reconcile hands the rest of its work on.
//!
//! Both calls are signed with the function's own credentials and go through the shared send path
//! (retries, classifier, limiter). A signed invocation goes only to an `https` host under
//! `oci.oraclecloud.com`, or to a loopback `http` address when the endpoint came from a loopback
//! Functions endpoint (tests).
//!
//! ```
//! use oci_user_capabilities::clients::functions::default_url;
//!
//! assert_eq!(
//!     default_url("us-ashburn-1").unwrap().as_str(),
//!     "https://functions.us-ashburn-1.oci.oraclecloud.com"
//! );
//! assert!(default_url("a/b").is_err());
//! ```

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::clients::identity_domain::unauthorized_hint;
use crate::intake::names::{check_invoke_endpoint, shown, DomainUrl, FunctionOcid};
use crate::transport::{Call, Hints, Transport};

/// The Functions API version in its paths.
const API_VERSION: &str = "20181201";
/// The service, as messages name it.
const SERVICE: &str = "OCI Functions";
/// A 403 from Functions: the dynamic group lacks the Functions statements.
const HINTS: Hints = Hints {
    forbidden: Some("the function's dynamic group needs `read fn-function` and `use fn-invocation` on this function (policies/function-reconciles-tenancy.policy)"),
    unauthorized: Some(unauthorized_hint),
};

/// The Functions management endpoint of a region.
pub fn default_url(region: &str) -> Result<DomainUrl, String> {
    let ok = !region.is_empty()
        && region.len() <= 63
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(format!(
            "region {} is not a region identifier such as us-ashburn-1",
            shown(region)
        ));
    }
    DomainUrl::parse(&format!("https://functions.{region}.oci.oraclecloud.com"))
        .map_err(|e| e.to_string())
}

/// Invokes this function again, detached.
#[derive(Debug, Clone)]
pub struct Functions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    /// `FN_FN_ID`; `Err` says why there is none (not running on the platform, or malformed).
    function: Result<FunctionOcid, String>,
    /// `FUNCTION_INVOKE_ENDPOINT`, already checked at start.
    explicit: Option<DomainUrl>,
    /// `FUNCTIONS_URL` or the region's default; `Err` says why neither is known.
    management: Result<DomainUrl, String>,
    resolved: OnceCell<DomainUrl>,
}

impl Functions {
    /// `function_id` is `FN_FN_ID` as the platform set it.
    pub fn new(
        transport: Transport,
        function_id: Option<&str>,
        explicit: Option<DomainUrl>,
        management: Result<DomainUrl, String>,
    ) -> Self {
        let function = match function_id {
            None => Err("FN_FN_ID is not set (not running as an OCI Function)".to_owned()),
            Some(id) => FunctionOcid::parse(id).map_err(|e| format!("FN_FN_ID: {e}")),
        };
        Self {
            inner: Arc::new(Inner {
                transport,
                function,
                explicit,
                management,
                resolved: OnceCell::new(),
            }),
        }
    }

    /// Starts this function with `body`, detached: `Ok` once the platform accepted it (2xx),
    /// with the request ids seen; `Err` says why not, after the send path's retries.
    pub async fn invoke_detached(
        &self,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<Vec<String>, String> {
        let function = self.inner.function.as_ref().map_err(Clone::clone)?;
        let endpoint = self.endpoint(function, deadline).await?;
        let url = endpoint.endpoint(
            &[
                API_VERSION,
                "functions",
                function.as_str(),
                "actions",
                "invoke",
            ],
            &[],
        );
        let call = Call::post_json(url, body)
            .with_service(SERVICE)
            .with_hints(HINTS)
            .with_header("fn-invoke-type", "detached");
        match self.inner.transport.send(&call, deadline).await {
            Ok(answer) => Ok(answer.request_ids),
            Err(failure) => Err(format!("invoking {function} (detached): {failure}")),
        }
    }

    /// `FUNCTION_INVOKE_ENDPOINT`, else `GetFunction`'s `invokeEndpoint`, asked once.
    async fn endpoint(
        &self,
        function: &FunctionOcid,
        deadline: Instant,
    ) -> Result<DomainUrl, String> {
        if let Some(url) = &self.inner.explicit {
            return Ok(url.clone());
        }
        self.inner
            .resolved
            .get_or_try_init(|| self.get_function(function, deadline))
            .await
            .cloned()
    }

    async fn get_function(
        &self,
        function: &FunctionOcid,
        deadline: Instant,
    ) -> Result<DomainUrl, String> {
        let management = self
            .inner
            .management
            .as_ref()
            .map_err(|why| format!("cannot find the invoke endpoint: {why}"))?;
        let url = management.endpoint(&[API_VERSION, "functions", function.as_str()], &[]);
        let call = Call::get(url).with_service(SERVICE).with_hints(HINTS);
        let answer = self
            .inner
            .transport
            .send(&call, deadline)
            .await
            .map_err(|f| format!("GetFunction {function}: {f}"))?;
        let value: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("GetFunction {function}: the answer is not JSON ({e})"))?;
        let text = value
            .get("invokeEndpoint")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("GetFunction {function}: the answer has no invokeEndpoint"))?;
        let endpoint = DomainUrl::parse(text.strip_suffix('/').unwrap_or(text))
            .map_err(|e| format!("GetFunction {function}: invokeEndpoint: {e}"))?;
        check_invoke_endpoint(&endpoint, management.is_loopback()).map_err(|e| {
            format!("GetFunction {function}: invokeEndpoint: {e}; nothing was sent there")
        })?;
        tracing::info!(function = %function, endpoint = %endpoint, "resolved the invoke endpoint");
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::names::check_invoke_endpoint;

    fn url(s: &str) -> DomainUrl {
        DomainUrl::parse(s).unwrap()
    }

    #[test]
    fn invoke_endpoints_are_oci_hosts_or_loopback_for_tests() {
        let ok = url("https://abcd1234.us-ashburn-1.functions.oci.oraclecloud.com");
        assert!(check_invoke_endpoint(&ok, false).is_ok());
        assert!(check_invoke_endpoint(&ok, true).is_ok());
        for bad in [
            "https://evil.example",
            "https://oci.oraclecloud.com.evil.example",
            "https://x.oci.oraclecloud.com:8443",
            "https://xoci.oraclecloud.com",
        ] {
            assert!(check_invoke_endpoint(&url(bad), false).is_err(), "{bad}");
        }
        let local = url("http://127.0.0.1:9000");
        assert!(check_invoke_endpoint(&local, false).is_err());
        assert!(check_invoke_endpoint(&local, true).is_ok());
    }
}
