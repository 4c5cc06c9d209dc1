// Shows each push Herald sends: the payload is {id, title, body, data, badge}.
self.addEventListener("push", (event) => {
  const m = event.data ? event.data.json() : {};
  event.waitUntil(
    self.registration.showNotification(m.title ?? "Notification", { body: m.body, data: m.data, tag: m.id }),
  );
});
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.openWindow("/"));
});
