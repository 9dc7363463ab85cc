//! Two services that talk through a broker: `orders` owns the [`Order`]
//! aggregate and publishes its events through a gateway; `shipping`
//! receives `OrderPlaced`, dispatches a [`Shipment`] from a process manager
//! and publishes `ShipmentDispatched`, which `orders` receives to mark the
//! order shipped. Each has its own SQLite log; RabbitMQ or NATS JetStream
//! carries the events between them. A third, `notifier`, has no aggregate:
//! it reacts to `OrderPlaced` through an inbox, without a log of the
//! orders' events. `examples/services/` runs each as a
//! program and `tests/services/` kills them mid-run.

pub mod notifier;
mod orders;
mod service;
mod shipping;

pub use notifier::NotifierService;
pub use orders::{
    MarkShipped, Order, OrderCommand, OrderError, OrderEvent, OrderPlaced, OrderShipped,
    OrdersService, PlaceOrder, Shipping,
};
pub use service::{Broker, Role, Service, ServiceConfig};
pub use shipping::{
    Dispatch, DispatchShipment, Shipment, ShipmentCommand, ShipmentDispatched, ShipmentError,
    ShipmentEvent, ShippingService,
};
