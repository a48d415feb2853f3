"""An offline corpus of real English sentences for quality checks and benchmarks.

Why not random strings: tokenised lengths and embedding quality on real text are what matter for a
sentence-embedding model, and the checks must run with no network. Every sentence has 8-20 words,
none repeats; the mix is news, technical, conversational, questions, science and description,
practical instructions, reviews and history.
"""

from __future__ import annotations

from functools import cache

_TEXT = """
The city council voted on Tuesday to extend the downtown bike lane network by twelve miles.
Heavy rain forced the closure of several mountain roads, and officials expect delays through the weekend.
The central bank held interest rates steady, citing slower inflation and a cooling labour market.
Shares of the electric carmaker fell sharply after the company lowered its delivery forecast for the year.
Firefighters contained most of the wildfire overnight, allowing hundreds of evacuated families to return home.
A new study suggests that teenagers who sleep longer tend to perform better on mathematics tests.
The national football team qualified for the tournament after a dramatic penalty shootout in the final minute.
Local farmers say the late frost damaged nearly half of this season's apple blossoms.
The museum will reopen next month after a two-year renovation of its main exhibition hall.
Negotiators reached a tentative agreement that would raise nurses' wages by eight percent over three years.
The airline cancelled dozens of flights after a software outage disrupted its booking and check-in systems.
Scientists announced the discovery of a new species of frog in the cloud forests of Ecuador.
Voters in the northern district will choose a new mayor in a special election next spring.
The government plans to build forty thousand affordable homes over the next five years.
A cargo ship ran aground near the harbour entrance, blocking traffic for most of the morning.
The tech company said it would cut about five percent of its workforce to reduce costs.
Unemployment fell to its lowest level in a decade, according to figures released on Friday.
Police are asking witnesses to come forward after a car crashed into a bakery late last night.
The school board approved a later start time for high schools beginning next academic year.
Record temperatures were recorded across southern Europe as the heatwave entered its second week.
The two countries signed a trade deal that removes tariffs on most agricultural products.
An earthquake of magnitude 6.1 struck off the coast, but no tsunami warning was issued.
The film festival opened with a documentary about the lives of lighthouse keepers.
Health officials urged older residents to get their flu vaccines before the winter season begins.
The bridge will be closed to heavy trucks while engineers inspect cracks in its supports.
A rare painting thought to be lost for a century sold at auction for twelve million dollars.
Commuters faced long delays after a signal failure halted trains on the eastern line.
The startup raised fifty million dollars to expand its battery recycling plants across the country.
Opposition leaders called for an independent inquiry into the handling of the flood response.
The hospital opened a new children's wing funded largely by donations from local businesses.
Oil prices climbed after producers agreed to extend production cuts until the end of the year.
The marathon attracted more than thirty thousand runners despite the cold and windy conditions.
Archaeologists uncovered the remains of a Roman villa beneath a car park in the town centre.
The library will offer free coding classes for children every Saturday morning this summer.
Investigators believe a faulty electrical cable caused the fire that destroyed the warehouse.
The prime minister is expected to announce a cabinet reshuffle before the end of the week.
A drought has left the reservoir at less than a third of its normal capacity.
The orchestra announced that its new conductor will take up the post in September.
Residents protested against plans to build a large distribution centre on protected farmland.
The space agency successfully launched a satellite designed to monitor sea levels from orbit.
Retail sales rose unexpectedly in March as shoppers spent more on clothing and electronics.
The court ruled that the company must pay compensation to workers dismissed without notice.
Thousands of people gathered in the square to celebrate the national holiday with music and fireworks.
The ferry service between the islands has been suspended because of rough seas.
A veteran journalist was awarded the prize for her reporting on corruption in public procurement.
The university will freeze tuition fees for domestic students for the next two years.
Traffic accidents on rural roads increased last year, prompting calls for lower speed limits.
The zoo welcomed a baby giraffe, the first born there in more than twenty years.
Officials say the water supply is safe to drink again after tests found no contamination.
The company recalled thousands of kettles after reports that their handles could overheat.
The function returns a sorted copy of the list and leaves the original unchanged.
Set the environment variable before starting the server, otherwise the default port will be used.
A hash table offers constant average time lookups but degrades when many keys collide.
The database index speeds up reads at the cost of slower writes and extra disk space.
Run the migrations before deploying the new version, or the application will fail to start.
Garbage collection pauses can cause latency spikes in services that allocate many short-lived objects.
The compiler inlines small functions to avoid call overhead in tight loops.
Use a connection pool so that each request does not open a new database connection.
The load balancer routes traffic to healthy instances and removes those that fail health checks.
Quantization stores weights as eight-bit integers, which reduces memory use and often speeds up inference.
A race condition appears when two threads update the same counter without a lock.
The cache evicts the least recently used entry once it reaches its configured size limit.
Containers share the host kernel, which makes them lighter than full virtual machines.
The neural network was trained for twenty epochs with a learning rate that decayed every five.
Backpressure prevents a fast producer from overwhelming a slow consumer by limiting the queue length.
This endpoint accepts a JSON body and returns the embedding vector for each input sentence.
The build fails because the linker cannot find the shared library in the search path.
Binary search requires the input to be sorted and runs in logarithmic time.
We replaced the polling loop with an event-driven design, which cut CPU usage by half.
The certificate expired last night, so browsers now show a security warning on the login page.
Each microservice owns its data and communicates with others only through published APIs.
The profiler shows that most of the time is spent parsing JSON rather than running the model.
Dynamic batching groups concurrent requests together to make better use of the hardware.
Rolling back the deployment restored service within minutes while the team investigated the bug.
The regular expression matches any email address that contains exactly one at sign.
A transformer model uses self-attention to weigh the importance of every token in the sequence.
Memory usage grows steadily over time, which suggests a leak in the request handler.
The scheduler assigns each task to the worker with the fewest active connections.
Enable compression on the API gateway to reduce bandwidth for large JSON responses.
Consistent hashing keeps most keys on the same server when a node is added or removed.
The test suite takes forty minutes, so we split it across several parallel runners.
Floating point addition is not associative, so summing in a different order may change the result.
The message queue guarantees at-least-once delivery, so consumers must handle duplicate messages.
Tokenization splits the text into subword units that the model can map to embeddings.
Autoscaling adds new instances when the average queue length stays above the threshold.
The configuration file is written in YAML and validated against a schema at startup.
Use exponential backoff with jitter when retrying failed requests to a busy service.
The kernel driver crashed because it dereferenced a null pointer during device initialisation.
Sharding spreads the data across several machines so that no single node holds everything.
A write-back cache acknowledges writes immediately and flushes them to storage later.
The model's accuracy dropped after quantization, so we kept the first layer in full precision.
Static typing catches many errors at compile time that would otherwise appear in production.
The firewall blocks all inbound traffic except on ports eighty and four hundred forty-three.
Vector databases store embeddings and find the nearest neighbours of a query quickly.
The thread pool has eight workers, and extra tasks wait in a bounded queue.
Version control lets the team review every change and revert mistakes easily.
The API returns a 503 status with a Retry-After header when the server is overloaded.
Cold starts are slow because the container must download the model weights before serving.
Profiling at the instruction level revealed that the loop was limited by memory bandwidth.
The sorting algorithm is stable, so equal elements keep their original relative order.
I'm running a bit late, so please start the meeting without me.
Thanks so much for dinner last night, the pasta was absolutely delicious.
I think I left my umbrella at your place, could you keep it for me?
Honestly, I didn't expect the movie to be that good, but I loved it.
Let's grab coffee sometime next week when things calm down at work.
My sister just moved to a new flat and she still has no furniture.
Sorry I missed your call, my phone was on silent all afternoon.
We should probably leave early to avoid the traffic on the motorway.
I've been trying to learn the guitar, but my fingers still hurt every evening.
The kids are finally asleep, so I can actually read my book in peace.
I can't believe how quickly this year has gone by, it's almost December.
If you need any help moving on Saturday, just let me know.
I tried that new bakery on the corner and their croissants are amazing.
My laptop keeps freezing whenever I open more than a few browser tabs.
We're thinking about adopting a dog, but our flat is pretty small.
Don't worry about the broken glass, it was an old one anyway.
I'll send you the photos from the trip as soon as I get home.
That was the longest queue I've ever stood in just for a sandwich.
I'm not really a morning person, so early meetings are tough for me.
Could you remind me to call the dentist tomorrow before lunch?
It's been raining all week and I'm starting to miss the sunshine.
My grandmother still makes the best apple pie I have ever tasted.
I finally finished that puzzle, it only took me three whole weekends.
The neighbours were playing loud music until two in the morning again.
I need a holiday somewhere warm where nobody can reach me by email.
We ended up walking home because the last bus never showed up.
I've heard great things about that restaurant, we should book a table.
My brother is coming to visit next weekend, so the spare room is taken.
Sorry, I completely forgot it was your birthday, let me buy you lunch.
I'm trying to cut down on sugar, but these biscuits are hard to resist.
The new job is going well, although the commute is longer than I hoped.
Please don't tell anyone yet, but we're expecting a baby in the spring.
I spent the whole afternoon cleaning the garage and found my old bike.
That shop has changed so much since we were kids, it's unrecognisable.
I'd love to join you for the hike, as long as it's not too steep.
My phone battery dies by lunchtime, so I might need a new one soon.
We watched the sunset from the beach and it was absolutely beautiful.
I have no idea what to cook tonight, there's nothing left in the fridge.
Let me know when you arrive at the station and I'll come pick you up.
I'm so proud of you for finishing the marathon, that's a huge achievement.
The cat knocked my coffee off the table again this morning.
I've been meaning to write to you for ages, but life got busy.
We're planning a small party for Dad's sixtieth birthday next month.
I think the printer is out of ink again, can someone order more?
My flight got delayed by four hours, so I'm stuck at the airport.
It was really nice meeting your parents, they are very kind people.
I'll be working from home tomorrow because the plumber is coming at nine.
Can you believe the price of tomatoes these days, it's ridiculous.
I fell asleep on the sofa and missed the end of the match.
Thanks for lending me your car, I filled up the tank before returning it.
How long does it take to travel from Paris to Berlin by train?
What is the best way to store fresh herbs so they last longer?
Why does the sky turn red and orange at sunset?
Can you recommend a good book for someone who enjoys historical fiction?
How do I reset my password if I no longer have access to my email?
What time does the pharmacy on the high street close on Sundays?
Is it safe to swim in the lake after heavy rain?
How many people live in the largest city in Canada?
What are the main differences between a virus and a bacterium?
Where can I find the documentation for the latest version of the library?
Why does my bread collapse in the oven after it has risen?
How much water should an adult drink during a normal day?
Which programming language is best suited for building mobile applications?
What happens if I miss the deadline for filing my tax return?
Could you explain how compound interest works with a simple example?
How do vaccines train the immune system to recognise a disease?
What should I pack for a week-long hiking trip in the mountains?
Is there a way to speed up the training of a large neural network?
Why do cats purr, and does it always mean they are happy?
How can I improve my pronunciation when learning a new language?
What is the difference between weather and climate?
When is the best season to visit Japan to see the cherry blossoms?
How do I know whether my houseplant needs more light or less water?
What causes the tides to rise and fall twice a day?
Why is my internet connection so slow in the evenings?
How do electric cars perform in very cold winter temperatures?
Can I bring my own food into the stadium during the concert?
What are some healthy breakfast ideas that take less than ten minutes?
How does a refrigerator keep food cold without making the kitchen hot?
Which museums in London are free to visit on weekdays?
How do I cancel my subscription without paying an extra fee?
What is the tallest mountain in Africa and how long does it take to climb?
Why do some people find it easier to wake up early than others?
How can a small business protect its customer data from hackers?
What does it mean when a check engine light comes on in a car?
Is it better to rent or buy a house in the current market?
How do bees communicate the location of flowers to the rest of the hive?
What are the symptoms of dehydration in young children?
How can I reduce the latency of my web service under heavy load?
Why did the Roman Empire eventually split into eastern and western halves?
How often should I replace the filter in my air conditioner?
What is the fastest way to learn to type without looking at the keyboard?
Do you know if the museum offers guided tours in Spanish?
How can I tell whether an online review is genuine or paid for?
What is the difference between a crocodile and an alligator?
Why does ice float on water instead of sinking to the bottom?
How much does it cost to repair a cracked phone screen?
What should I do if my dog eats chocolate by accident?
How does the brain form long-term memories while we sleep?
Which vegetables can be grown easily on a small balcony?
Octopuses have three hearts and blue blood that carries oxygen using copper.
The Amazon rainforest produces a large share of its own rainfall through evaporation from its trees.
Light from the Sun takes about eight minutes to reach the surface of the Earth.
Honey never spoils because its low moisture and high acidity prevent bacteria from growing.
Migrating birds use the Earth's magnetic field to navigate over thousands of kilometres.
The human brain uses roughly twenty percent of the body's energy while at rest.
Glaciers carve deep valleys as they slowly move downhill under their own weight.
Coral reefs cover a tiny fraction of the ocean floor but support a quarter of marine species.
Water expands when it freezes, which is why pipes can burst during cold winters.
The old lighthouse stood alone on the cliff, its white paint peeling in the salty wind.
A thick fog rolled in from the sea and swallowed the harbour within minutes.
The village square was crowded with market stalls selling cheese, bread and fresh flowers.
Volcanic soil is often very fertile, which is why farmers settle near active volcanoes.
Plants convert sunlight, water and carbon dioxide into sugar through photosynthesis.
The snow crunched under our boots as we climbed towards the frozen waterfall.
Tardigrades can survive extreme temperatures, radiation and even the vacuum of space.
Elephants recognise themselves in mirrors, a sign of self-awareness shared by few animals.
The train wound slowly through green valleys dotted with sheep and stone cottages.
Antibiotics kill bacteria but have no effect on infections caused by viruses.
The smell of freshly cut grass drifted through the open kitchen window.
Jupiter is so large that more than a thousand Earths could fit inside it.
Bamboo is one of the fastest-growing plants, sometimes growing almost a metre in a day.
The ancient oak tree in the park is believed to be over five hundred years old.
Sound travels about four times faster in water than it does in air.
The desert comes alive after rare spring rains, covering the sand with wildflowers.
Sharks have existed for longer than trees, appearing more than four hundred million years ago.
The bakery filled the narrow street with the warm smell of cinnamon and butter.
Earthworms improve soil by breaking down dead leaves and mixing nutrients into the ground.
The moon's gravity slowly lengthens the Earth's day by a tiny fraction each century.
A rainbow appears when sunlight is refracted and reflected inside falling raindrops.
The river burst its banks after days of rain, flooding fields along the valley.
Penguins huddle together in large groups to survive the bitter Antarctic winter.
The abandoned factory's windows were broken, and ivy had crept across its brick walls.
Diamonds and graphite are both made of carbon atoms arranged in different structures.
The northern lights shimmered green and purple above the snow-covered forest.
Bats use echolocation to hunt insects in complete darkness.
The city skyline glittered across the bay as the evening ferry pulled away.
Human DNA is about ninety-nine percent identical to that of chimpanzees.
Salt water freezes at a lower temperature than fresh water because of dissolved minerals.
A quiet library at dawn is one of the most peaceful places I know.
Caffeine blocks adenosine receptors in the brain, which temporarily reduces the feeling of tiredness.
The autumn leaves turned the hillside into a patchwork of red, orange and gold.
Some species of jellyfish can revert to an earlier stage of their life cycle.
The stadium fell silent as the striker stepped up to take the final penalty.
Mount Everest grows a few millimetres each year as the tectonic plates continue to collide.
The market traders packed up their stalls as the first drops of rain began to fall.
Mushrooms are more closely related to animals than they are to plants.
The wind turbines on the ridge turned slowly against the grey evening sky.
Venus rotates so slowly that a day there lasts longer than its year.
Fireflies produce light through a chemical reaction that generates almost no heat.
Preheat the oven to two hundred degrees and grease a large baking tray.
Stir the sauce gently over a low heat until it thickens and coats the spoon.
Remember to back up your files before installing the operating system update.
Water tomato plants at the base in the morning to prevent leaf disease.
Please fill in the form in block capitals and sign it at the bottom.
Turn left at the second roundabout and the hotel will be on your right.
Keep your receipt, because you will need it to return or exchange the item.
Stretch for a few minutes before running to reduce the risk of injury.
Soak the beans overnight, then rinse them well before cooking them slowly.
Check the tyre pressure once a month and before any long journey.
Our quarterly revenue grew by twelve percent, driven mainly by strong online sales.
The marketing team will present the new campaign to the board on Thursday afternoon.
Customer complaints dropped after we introduced a simpler returns process.
We need to hire two more engineers before the product launch in October.
The contract must be signed by both parties before any work can begin.
Our office will be closed on Monday for the public holiday.
The invoice is overdue by thirty days, so please arrange payment as soon as possible.
The supplier raised prices again, so we are looking for alternative vendors.
Regular exercise lowers blood pressure and improves sleep quality in most adults.
Eating more fibre can help digestion and keep you feeling full for longer.
Doctors recommend at least seven hours of sleep a night for healthy adults.
Washing your hands with soap for twenty seconds removes most common germs.
Too much screen time before bed can make it harder to fall asleep.
The pharmacist explained that the medicine should be taken with food twice daily.
Physiotherapy helped her recover full movement in her shoulder after the accident.
The novel follows three generations of a family running a small fishing business.
His latest album mixes traditional folk songs with modern electronic beats.
The play received glowing reviews for its sharp dialogue and clever staging.
She painted the portrait over six months, working only by natural daylight.
The documentary explores how climate change is affecting small island nations.
The tennis player won her third grand slam title without dropping a set.
Our team lost the match in extra time after leading for most of the game.
The cyclists climbed the steep mountain pass in heavy rain and fog.
He has been training every morning for the swimming championship next month.
The chess champion defended her title after a tense final game lasting six hours.
The children built a huge sandcastle with towers, walls and a moat.
Grandfather told us stories about growing up on a farm without electricity.
The teacher asked the students to write a short essay about their favourite place.
The students organised a charity bake sale to raise money for the animal shelter.
After years of saving, they finally bought a small cottage by the sea.
The hotel room was clean and quiet, but the breakfast was disappointing.
The delivery arrived two days late and the box was badly damaged.
This vacuum cleaner is powerful, light and surprisingly quiet for its size.
The customer service agent resolved my problem quickly and was very polite.
I would not recommend this phone case, it cracked within a week.
The restaurant's vegetarian menu is creative, but the portions are rather small.
The headphones have excellent sound, although the battery life could be better.
Our guide was friendly and knowledgeable, and the tour was worth every penny.
The app crashes every time I try to upload a photo from my gallery.
The jacket kept me warm and dry during a full day of hiking in the rain.
The printing press made books cheaper and helped spread literacy across Europe.
The Great Wall of China was built over many centuries by several different dynasties.
The first successful powered flight lasted only twelve seconds but changed transport forever.
Ancient Egyptians used papyrus to make paper, sandals, boats and baskets.
The Industrial Revolution began in Britain and transformed how goods were produced.
Many languages spoken in Europe and India descend from a common ancestor.
The Silk Road connected China with the Mediterranean for more than a thousand years.
The fall of the Berlin Wall in 1989 marked the end of a divided city.
Shakespeare wrote nearly forty plays and more than one hundred and fifty sonnets.
Tea was introduced to Britain in the seventeenth century and quickly became fashionable.
The Olympic Games originated in ancient Greece as a festival honouring Zeus.
Jazz emerged in New Orleans in the early twentieth century from blues and ragtime.
The Rosetta Stone allowed scholars to finally decipher Egyptian hieroglyphs.
Penicillin was discovered by accident when mould contaminated a laboratory dish.
The Renaissance saw a revival of classical art, science and philosophy in Italy.
The first computers filled entire rooms and had less power than a modern calculator.
Vikings sailed as far as North America centuries before Columbus made his voyage.
The invention of the telephone allowed people to speak across great distances instantly.
Traditional Japanese gardens use stones, water and plants to represent natural landscapes.
In many cultures, sharing bread is a symbol of friendship and hospitality.
Chess originated in India and spread to Persia before reaching Europe.
The Aztec capital was built on an island in the middle of a large lake.
The moon landing in 1969 was watched on television by hundreds of millions of people.
Mozart composed his first symphony when he was only eight years old.
The ancient city of Petra was carved directly into rose-coloured sandstone cliffs.
Women in New Zealand won the right to vote in national elections in 1893.
The Eiffel Tower was originally meant to be a temporary structure for a world fair.
Paper money was first used in China more than a thousand years ago.
The Black Death killed a large portion of Europe's population in the fourteenth century.
Carnival celebrations in Brazil feature samba schools, colourful costumes and street parades.
The Library of Alexandria was one of the largest collections of knowledge in the ancient world.
The steam engine powered factories, ships and trains during the nineteenth century.
Origami, the art of folding paper, has been practised in Japan for centuries.
The Magna Carta limited the power of the English king and protected certain rights.
Marie Curie was the first person to win Nobel Prizes in two different sciences.
The Panama Canal shortened the sea voyage between the Atlantic and Pacific oceans.
Folk tales were passed down orally for generations before anyone wrote them down.
The Taj Mahal was built by an emperor in memory of his beloved wife.
The World Wide Web was invented to help scientists share documents between computers.
Ancient Romans built aqueducts to carry fresh water into their growing cities.
The invention of the refrigerator changed how families shopped and cooked.
Dance has been part of religious ceremonies in almost every human culture.
Early sailors navigated by the stars long before the invention of the compass.
The Dead Sea is so salty that swimmers float effortlessly on its surface.
Many modern English words were borrowed from French after the Norman conquest.
The first public railway opened in England in the early nineteenth century.
Mapmakers once drew sea monsters in unexplored areas of the ocean.
Writing systems developed independently in Mesopotamia, China and Central America.
The Olympic flame is lit in Greece months before the start of each games.
Hip hop began at block parties in the Bronx during the nineteen seventies.
"""


@cache
def _all() -> tuple[str, ...]:
    return tuple(line.strip() for line in _TEXT.splitlines() if line.strip())


def sentences() -> list[str]:
    """The corpus, in a fixed order (a fresh list: callers may shuffle it)."""
    return list(_all())
