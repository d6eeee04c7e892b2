"""The StateFun playground's shopping cart (flink-statefun-playground, java/shopping-cart),
written with the official Apache Flink StateFun Python SDK (3.3.0) and served with aiohttp.
Nothing here knows about Spindle; the module.yaml that wires it to Kafka is in
worker/tests/statefun_module.rs.

com.example/stock/<item>           state: stock (int)
    com.example/RestockItem {"itemId", "quantity"}   (Kafka topic restock-items) stock += quantity
    com.example/RequestItem {"quantity"}             from a cart: replies ItemAvailability to the
                                                     caller; IN_STOCK takes the quantity from stock
com.example/user-shopping-cart/<user>  state: basket (JSON {item: quantity})
    com.example/AddToCart {"userId", "itemId", "quantity"}  (topic add-to-cart) asks the item's
                                                     stock for the quantity
    com.example/ItemAvailability {"status", "quantity"}  from the stock: IN_STOCK adds it to the
                                                     basket (the item is the caller's id)
    com.example/Checkout {"userId"}                  (topic checkout) writes a Receipt
                                                     {"userId", "details"} to the Kafka egress
                                                     com.example/receipts, topic receipts, key
                                                     the user; empties the basket
"""
import json
import os

from aiohttp import web
from statefun import (StatefulFunctions, RequestReplyHandler, Context, Message, ValueSpec,
                      IntType, make_json_type, message_builder, kafka_egress_message)

RESTOCK_ITEM = make_json_type("com.example/RestockItem")
ADD_TO_CART = make_json_type("com.example/AddToCart")
CHECKOUT = make_json_type("com.example/Checkout")
REQUEST_ITEM = make_json_type("com.example/RequestItem")
ITEM_AVAILABILITY = make_json_type("com.example/ItemAvailability")
BASKET = make_json_type("com.example/Basket")

functions = StatefulFunctions()


@functions.bind(typename="com.example/stock", specs=[ValueSpec(name="stock", type=IntType)])
async def stock(context: Context, message: Message):
    quantity = context.storage.stock or 0
    if message.is_type(RESTOCK_ITEM):
        context.storage.stock = quantity + message.as_type(RESTOCK_ITEM)["quantity"]
    elif message.is_type(REQUEST_ITEM):
        requested = message.as_type(REQUEST_ITEM)["quantity"]
        if quantity >= requested:
            context.storage.stock = quantity - requested
            status = "IN_STOCK"
        else:
            status = "OUT_OF_STOCK"
        context.send(message_builder(target_typename=context.caller.typename,
                                     target_id=context.caller.id,
                                     value={"status": status, "quantity": requested},
                                     value_type=ITEM_AVAILABILITY))
    else:
        raise ValueError(f"com.example/stock: unexpected message type {message.value_typename()}")


@functions.bind(typename="com.example/user-shopping-cart",
                specs=[ValueSpec(name="basket", type=BASKET)])
async def user_shopping_cart(context: Context, message: Message):
    basket = context.storage.basket or {}
    if message.is_type(ADD_TO_CART):
        add = message.as_type(ADD_TO_CART)
        context.send(message_builder(target_typename="com.example/stock", target_id=add["itemId"],
                                     value={"quantity": add["quantity"]},
                                     value_type=REQUEST_ITEM))
    elif message.is_type(ITEM_AVAILABILITY):
        availability = message.as_type(ITEM_AVAILABILITY)
        if availability["status"] == "IN_STOCK":
            item = context.caller.id
            basket[item] = basket.get(item, 0) + availability["quantity"]
            context.storage.basket = basket
    elif message.is_type(CHECKOUT):
        user = context.address.id
        receipt = {"userId": user, "details": dict(sorted(basket.items()))}
        context.send_egress(kafka_egress_message(typename="com.example/receipts", topic="receipts",
                                                 key=user, value=json.dumps(receipt)))
        del context.storage.basket
    else:
        raise ValueError(f"com.example/user-shopping-cart: unexpected message type "
                         f"{message.value_typename()}")


handler = RequestReplyHandler(functions)


async def handle(request: web.Request) -> web.Response:
    reply = await handler.handle_async(await request.read())
    return web.Response(body=reply, content_type="application/octet-stream")


app = web.Application()
app.add_routes([web.post("/statefun", handle)])

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
