//! Snapshot thumbnails over REST: pushes carry only a reference, so the image is fetched from
//! `GET /api/devices/{id}/snapshot` with the admin's Bearer token and shown through an object
//! URL (fetch → blob → `URL.createObjectURL`), never sent over the socket.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, Headers, Request, RequestCache, RequestInit, Response, Url};

fn js_err(e: JsValue) -> String {
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// The device's latest snapshot as an object URL (`None`: it has none yet). The caller owns
/// the URL and must [`release`] it when replaced.
pub async fn fetch(device_id: &str, token: &str) -> Result<Option<String>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let headers = Headers::new().map_err(js_err)?;
    headers.set("Authorization", &format!("Bearer {token}")).map_err(js_err)?;
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    // Same URL for every new image: never from the HTTP cache.
    init.set_cache(RequestCache::NoStore);
    let url = format!("/api/devices/{}/snapshot", String::from(js_sys::encode_uri_component(device_id)));
    let req = Request::new_with_str_and_init(&url, &init).map_err(js_err)?;
    let resp: Response =
        JsFuture::from(window.fetch_with_request(&req)).await.map_err(js_err)?.dyn_into().map_err(js_err)?;
    match resp.status() {
        404 => return Ok(None),
        s if !(200..300).contains(&s) => return Err(format!("snapshot: HTTP {s}")),
        _ => {}
    }
    let blob: Blob = JsFuture::from(resp.blob().map_err(js_err)?).await.map_err(js_err)?.dyn_into().map_err(js_err)?;
    Url::create_object_url_with_blob(&blob).map(Some).map_err(js_err)
}

/// Frees an object URL made by [`fetch`].
pub fn release(url: &str) {
    let _ = Url::revoke_object_url(url);
}
