"""Jobs that write label stores: teacher inference (``generation``) and format conversion (``convert``)."""
