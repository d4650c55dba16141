//! The request head limit that keeps idle connections small: heads up to 8 KiB are served,
//! larger ones get 431 instead of growing a buffer every idle stream would then keep.

mod support;

use support::TestServer;

#[tokio::test]
async fn request_heads_over_8_kib_get_431() {
    let server = TestServer::start().await;
    let send = |cookie_len: usize| {
        server
            .client
            .get(server.url("/healthz"))
            .header("cookie", format!("x={}", "a".repeat(cookie_len)))
            .send()
    };
    assert_eq!(send(6 * 1024).await.expect("send").status(), 200);
    assert_eq!(send(9 * 1024).await.expect("send").status(), 431);
}
