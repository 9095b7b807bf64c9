"""GNU Radio blocks that carry semcom frames: semantic TX/RX message blocks and the packet PHY."""
