//! The private test bus itself: a name owned by one connection is callable
//! from another, and a service that drops off frees its name (what the
//! logind, UDisks2 and Avahi stand-ins rely on).
use crate::common;

use common::dbus::PrivateBus;

struct Echo;

#[zbus::interface(name = "io.arasul.Test.Echo")]
impl Echo {
    fn echo(&self, s: String) -> String {
        format!("echo: {s}")
    }
}

#[tokio::test]
async fn a_service_on_the_private_bus_answers_and_its_name_is_freed_on_drop() {
    let bus = PrivateBus::start();
    let service = bus.connect().await;
    service
        .object_server()
        .at("/io/arasul/Test", Echo)
        .await
        .unwrap();
    service.request_name("io.arasul.Test").await.unwrap();

    let client = bus.connect().await;
    let reply = client
        .call_method(
            Some("io.arasul.Test"),
            "/io/arasul/Test",
            Some("io.arasul.Test.Echo"),
            "Echo",
            &("hi",),
        )
        .await
        .unwrap();
    let s: String = reply.body().deserialize().unwrap();
    assert_eq!(s, "echo: hi");

    drop(service);
    let dbus = zbus::fdo::DBusProxy::new(&client).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while dbus
        .name_has_owner("io.arasul.Test".try_into().unwrap())
        .await
        .unwrap()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the name was not released within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
